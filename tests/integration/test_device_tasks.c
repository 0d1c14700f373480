/* test_device_tasks.c - the device side of polled tasks against the bridge test double:
 * each type runs, forged/foreign/expired/replayed lists have no effect, restarts never run a
 * task twice, set_config survives a restart. (End to end with the real bridge:
 * test_tasks.c.) */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h_device.h"
#include "h_fakebridge.h"
#include "harness.h"
#include "outpost.pb-c.h"

#define SUCCEEDED OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define FAILED OUTPOST__TASK_STATUS__TASK_STATUS_FAILED
#define REJECTED OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED

static int wait_result(struct h_fakebridge *fb, uint64_t id, char *msg, size_t cap, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	int st;
	while (!(st = h_fakebridge_result(fb, id, msg, cap)) && h_now_ms() < end)
		h_sleep_ms(50);
	return st;
}

struct env {
	struct h_broker b;
	struct h_device d;
	struct h_fakebridge *fb;
};

static void start(struct env *e)
{
	memset(e, 0, sizeof(*e));
	h_broker_start(&e->b, h_pki());
	e->fb = h_fakebridge_start(&e->b, H_ACK_NORMAL);
	const char *extra[] = {"--poll-interval", "1s", NULL};
	h_device_start(&e->d, &e->b, "dev-a", extra);
}

/* start, and a first task answered: the agent is connected and polling */
static void start_polling(struct env *e)
{
	char msg[256];
	start(e);
	h_fakebridge_queue_task(e->fb, 1, "ping", NULL, NULL, 0, 0);
	cr_assert_eq(wait_result(e->fb, 1, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
}

static void stop(struct env *e)
{
	h_device_free(&e->d);
	h_fakebridge_stop(e->fb);
	h_broker_free(&e->b);
}

Test(device_tasks, ping_and_collect_now, .timeout = 60)
{
	struct env e;
	char msg[256];
	start(&e);
	h_fakebridge_queue_task(e.fb, 1, "ping", NULL, NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 1, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
	cr_expect_str_eq(msg, "pong");
	h_fakebridge_queue_task(e.fb, 2, "collect_now", NULL, NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 2, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
	/* "-1" is not the largest seq */
	h_fakebridge_queue_task(e.fb, 3, "resend", "from=1 to=-1", NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 3, msg, sizeof(msg), 10000), FAILED, "%s", msg);
	cr_expect(strstr(msg, "from=SEQ to=SEQ"), "%s", msg);
	/* resend needs data still in the spool: stop acknowledging for a moment */
	h_fakebridge_mode(e.fb, H_ACK_NONE);
	h_sleep_ms(1500);
	h_fakebridge_queue_task(e.fb, 4, "resend", "from=1 to=18446744073709551615", NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 4, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
	h_fakebridge_queue_task(e.fb, 5, "resend", "from=9", NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 5, msg, sizeof(msg), 10000), FAILED, "%s", msg);
	stop(&e);
}

Test(device_tasks, untrusted_lists_have_no_effect, .timeout = 90)
{
	struct env e;
	char msg[256];
	start(&e);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t past = (int64_t)ts.tv_sec * 1000 - 1000;

	/* a forged list is ignored whole: no result for task ids its sender chose */
	h_fakebridge_queue_task(e.fb, 10, "set_config", "poll_interval=7s", NULL, 0, 1);
	cr_expect(h_log_wait(e.d.log, "ignored a task list of 1 task(s), first id 10: bad signature",
			     1, 10000));
	cr_expect_eq(wait_result(e.fb, 10, msg, sizeof(msg), 1500), 0, "%s", msg);
	h_fakebridge_queue_task(e.fb, 11, "set_config", "poll_interval=7s", "dev-b", 0, 0);
	cr_expect_eq(wait_result(e.fb, 11, msg, sizeof(msg), 10000), REJECTED);
	cr_expect(strstr(msg, "another device"), "%s", msg);
	h_fakebridge_queue_task(e.fb, 12, "set_config", "poll_interval=7s", NULL, past, 0);
	cr_expect_eq(wait_result(e.fb, 12, msg, sizeof(msg), 10000), REJECTED);
	cr_expect_str_eq(msg, "expired");
	h_fakebridge_queue_task(e.fb, 13, "ping", NULL, NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 13, msg, sizeof(msg), 10000), SUCCEEDED);
	int runs = h_log_count(e.d.log, "task 13: running");
	h_fakebridge_replay_tasks(e.fb);
	cr_assert(h_log_wait(e.d.log, "first id 13: replayed", 1, 10000), "log %s", e.d.log);
	cr_expect_eq(h_log_count(e.d.log, "task 13: running"), runs, "a replayed task ran again");
	/* a valid answer to a later poll carries task 13 again (a bridge answering several
	 * outstanding polls): it neither runs nor gets a second result */
	h_fakebridge_queue_task(e.fb, 13, "ping", NULL, NULL, 0, 0);
	cr_assert(h_log_wait(e.d.log, "task 13: delivered again", 1, 10000), "log %s", e.d.log);
	h_sleep_ms(1500);
	cr_expect_eq(h_log_count(e.d.log, "task 13: running"), runs, "a task ran twice");
	cr_expect_eq(wait_result(e.fb, 13, msg, sizeof(msg), 100), SUCCEEDED,
		     "the success was followed by: %s", msg);
	cr_expect_eq(h_log_count(e.d.log, "set_config"), 0, "a rejected set_config ran");
	char *override = h_strf("%s/state/config.override", e.d.dir);
	cr_expect_null(h_read_file(override, NULL), "nothing was persisted");
	free(override);
	stop(&e);
}

static int batch_interval_is(const struct h_device_view *v, uint64_t s)
{
	return v->last_batch_interval_s == s;
}

Test(device_tasks, set_config_survives_restart_and_restart_runs_once, .timeout = 90)
{
	struct env e;
	struct h_device_view v;
	char msg[256];
	start(&e);
	cr_assert(h_fakebridge_wait(e.fb, "dev-a", 10000, h_view_births_at_least, 1, &v));
	cr_expect_eq(v.last_batch_interval_s, 1);
	h_fakebridge_queue_task(e.fb, 20, "set_config", "batch_interval=2s sample_interval=500ms", NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 20, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
	/* the intervals travel in a new Birth at once: the bridge's offline limit follows them */
	cr_expect(h_fakebridge_wait(e.fb, "dev-a", 5000, batch_interval_is, 2, &v),
		  "no Birth with the new batch interval (last said %u s)", v.last_batch_interval_s);
	cr_expect_eq(v.last_sample_interval_s, 1, "500 ms is rounded up");
	cr_expect_geq(v.births, 2);
	h_fakebridge_queue_task(e.fb, 21, "set_config", "broker_host=evil.invalid", NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 21, msg, sizeof(msg), 10000), FAILED);
	cr_expect(strstr(msg, "not remotely settable"), "%s", msg);

	h_fakebridge_queue_task(e.fb, 22, "restart", NULL, NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 22, msg, sizeof(msg), 20000), SUCCEEDED, "%s", msg);
	cr_expect_str_eq(msg, "agent restarted");
	cr_expect_eq(h_log_count(e.d.log, "task 22: running"), 1);
	cr_expect_geq(h_log_count(e.d.log, "started: broker"), 2, "the agent came back");
	char *comm_path = h_strf("/proc/%d/comm", (int)e.d.pid);
	char *comm = h_read_file(comm_path, NULL);
	cr_expect(comm && !strcmp(comm, "outpost-device\n"), "re-executed as '%s'", comm ? comm : "?");
	free(comm);
	free(comm_path);

	/* the new agent runs with the persisted settings */
	char *override = h_strf("%s/state/config.override", e.d.dir);
	char *text = h_read_file(override, NULL);
	cr_assert_not_null(text);
	cr_expect(strstr(text, "batch_interval = 2s"), "%s", text);
	cr_expect(strstr(text, "sample_interval = 500ms"), "%s", text);
	free(text);
	free(override);
	h_device_stop(&e.d);
	h_device_start(&e.d, &e.b, "dev-a", NULL);
	cr_assert(h_log_wait(e.d.log, "connected to", 3, 15000));
	h_sleep_ms(2500);
	cr_expect_eq(h_log_count(e.d.log, "task 22: running"), 1, "restart ran twice");
	stop(&e);
}

/* Size of the largest spool segment of the device. */
static long largest_segment(const struct h_device *d)
{
	char *dir = h_strf("%s/state/spool", d->dir);
	DIR *dp = opendir(dir);
	struct dirent *de;
	long size = -1;
	while (dp && (de = readdir(dp))) {
		struct stat st;
		char *path = h_strf("%s/%s", dir, de->d_name);
		if (!strncmp(de->d_name, "seg-", 4) && stat(path, &st) == 0 && st.st_size > size)
			size = (long)st.st_size;
		free(path);
	}
	if (dp)
		closedir(dp);
	free(dir);
	return size;
}

/* The disk fills up under the agent: acks are withheld until a spool segment outgrows `bytes`,
 * then the agent gets that file size limit. With 2048 the spool may not grow but the small
 * state files still fit; with 40 not even the spool's 48-byte state file can be rewritten.
 * The limit holds for the device's log too (it appends to it): what it wrote so far moves to
 * device.log.1, so that the lines written meanwhile fit (with 2048). */
static void fill_disk(struct env *e, long bytes)
{
	h_fakebridge_mode(e->fb, H_ACK_NONE);
	for (int i = 0; i < 100 && largest_segment(&e->d) <= bytes; i++)
		h_sleep_ms(100);
	cr_assert_gt(largest_segment(&e->d), bytes);
	size_t log_len = 0;
	char *old_log = h_strf("%s.1", e->d.log), *text = h_read_file(e->d.log, &log_len);
	FILE *f = fopen(old_log, "w");
	cr_assert(text && f && fwrite(text, 1, log_len, f) == log_len && fclose(f) == 0);
	cr_assert_eq(truncate(e->d.log, 0), 0);
	free(text);
	free(old_log);
	struct rlimit full = {(rlim_t)bytes, RLIM_INFINITY};
	cr_assert_eq(prlimit(e->d.pid, RLIMIT_FSIZE, &full, NULL), 0);
}

/* Room again on the disk. The bridge acknowledges again. */
static void make_room(struct env *e)
{
	struct rlimit room = {RLIM_INFINITY, RLIM_INFINITY};
	cr_assert_eq(prlimit(e->d.pid, RLIMIT_FSIZE, &room, NULL), 0);
	h_fakebridge_mode(e->fb, H_ACK_NORMAL);
}

Test(device_tasks, a_result_waits_out_a_full_disk, .timeout = 90)
{
	struct env e;
	char msg[256];
	start_polling(&e);

	/* the disk fills up under the spool while a task runs: the task runs, its result has
	 * nowhere to go */
	fill_disk(&e, 2048);
	h_fakebridge_queue_task(e.fb, 2, "ping", NULL, NULL, 0, 0);
	/* "no result" means something only once the device polled, ran the task and found no
	 * room for its result */
	cr_assert(h_log_wait(e.d.log, "task 2: result kept in memory until the spool takes it", 1,
			     10000), "task 2 never ran against the full disk: %s", e.d.log);
	cr_expect_eq(h_log_count(e.d.log, "task 2: running ping"), 1);
	cr_expect_eq(wait_result(e.fb, 2, msg, sizeof(msg), 2000), 0, "no result without a spool");
	cr_expect_eq(kill(e.d.pid, 0), 0, "the agent is still running");
	/* the upload window drains once the device probes again: after ~10 s without acks its
	 * ack timer has backed off (ack_timeout 3 s, then 1-2x, 2-4x, 4-8x: up to 24 s) */
	make_room(&e);
	msg[0] = '\0';
	cr_expect_eq(wait_result(e.fb, 2, msg, sizeof(msg), 40000), SUCCEEDED,
		     "the result was kept and stored once there was room: %s", msg);
	cr_expect_str_eq(msg, "pong");
	cr_expect(h_log_wait(e.d.log, "task 2: result stored", 1, 5000));
	stop(&e);
}

/* The tasks file cannot be rewritten (its temporary file is a directory), so a task cannot
 * begin: it is reported failed, not run, and marked seen in memory. Delivered again — as the
 * bridge does while it has no result — it does not run, then or once the file can be written
 * again; and the mark reaches the file. */
Test(device_tasks, a_task_that_could_not_begin_never_runs, .timeout = 90)
{
	struct env e;
	char msg[256];
	start_polling(&e);
	char *tmp = h_strf("%s/state/tasks.tmp", e.d.dir);
	cr_assert_eq(mkdir(tmp, 0700), 0);
	h_fakebridge_queue_task(e.fb, 2, "ping", NULL, NULL, 0, 0);
	cr_assert_eq(wait_result(e.fb, 2, msg, sizeof(msg), 10000), FAILED, "%s", msg);
	cr_expect_str_eq(msg, "cannot persist task state; not run");
	for (int round = 0; round < 2; round++) {
		h_fakebridge_queue_task(e.fb, 2, "ping", NULL, NULL, 0, 0);
		cr_assert(h_log_wait(e.d.log, "task 2: delivered again", round + 1, 10000),
			  "round %d: %s", round, e.d.log);
		if (round == 0) {
			cr_assert_eq(rmdir(tmp), 0);
			cr_assert(h_log_wait(e.d.log, "tasks: the task state is recorded now", 1,
					     20000), "%s", e.d.log);
		}
	}
	cr_expect_eq(h_log_count(e.d.log, "task 2: running"), 1, "the task ran: %s", e.d.log);
	cr_expect_eq(h_log_count(e.d.log, "task 2: succeeded"), 0, "the task ran: %s", e.d.log);
	free(tmp);
	stop(&e);
}

/* The agent stops while a result waits in memory for room in the spool: the tasks file still
 * says the task was running, so the next agent reports it (interrupted: whether it took effect
 * is unknown to it); a rejection (a type the device does not run) not stored is not marked
 * seen either, so it is judged and reported again when the bridge delivers the task again, as
 * it does while a task has no result. Neither result is lost. */
Test(device_tasks, a_result_waiting_for_room_survives_a_restart, .timeout = 120)
{
	struct env e;
	char msg[256];
	start_polling(&e);
	const char *extra[] = {"--poll-interval", "1s", NULL};
	for (int round = 0; round < 2; round++) {
		uint64_t id = 2 + (uint64_t)round;
		char *kept = h_strf("task %llu: result kept in memory", (unsigned long long)id);
		fill_disk(&e, 2048);
		h_fakebridge_queue_task(e.fb, id, round == 0 ? "ping" : "format_disk", NULL, NULL, 0,
		                        0);
		cr_assert(h_log_wait(e.d.log, kept, 1, 10000), "%s: %s", kept, e.d.log);
		cr_assert_eq(h_device_stop(&e.d), 0);
		h_fakebridge_mode(e.fb, H_ACK_NORMAL); /* the new agent has room */
		if (round == 1) /* the bridge delivers what has no result again */
			h_fakebridge_queue_task(e.fb, id, "format_disk", NULL, NULL, 0, 0);
		h_device_start(&e.d, &e.b, "dev-a", extra);
		int st = wait_result(e.fb, id, msg, sizeof(msg), 20000);
		if (round == 0) {
			cr_expect_eq(st, FAILED, "task 2's result was lost in the restart");
			cr_expect(strstr(msg, "interrupted by an agent restart"), "%s", msg);
			cr_expect_eq(h_log_count(e.d.log, "task 2: running ping"), 1, "run once");
		} else {
			cr_expect_eq(st, REJECTED, "task 3's rejection was lost in the restart");
		}
		free(kept);
	}
	stop(&e);
}

/* An agent restarted on a disk so full that not even its spool's state file can be rewritten
 * starts and connects, but cannot number its Birth: the Birth is not sent, the agent keeps
 * running and tries again; once there is room the Birth goes, and then the restart's result.
 * (Its log is full too: the broker's log shows the connection.) */
Test(device_tasks, a_birth_refused_by_a_full_disk_goes_once_there_is_room, .timeout = 120)
{
	struct env e;
	struct h_device_view v0, v;
	char msg[256];
	start_polling(&e);
	int sessions = h_log_count(e.b.log, " as dev-a ");
	cr_assert_geq(sessions, 1);
	fill_disk(&e, 40);
	h_fakebridge_view(e.fb, "dev-a", &v0);
	cr_assert_geq(v0.births, 1);
	h_fakebridge_queue_task(e.fb, 2, "restart", NULL, NULL, 0, 0);
	cr_assert(h_log_wait(e.b.log, " as dev-a ", sessions + 1, 30000),
		  "the agent restarted on a full disk did not connect: %s", e.b.log);
	h_sleep_ms(2000); /* it tries the Birth again every 2 s */
	cr_expect_eq(kill(e.d.pid, 0), 0, "the agent restarted on a full disk is running");
	h_fakebridge_view(e.fb, "dev-a", &v);
	cr_expect_eq(v.births, v0.births, "a Birth went with a seq the spool could not reserve");
	make_room(&e);
	h_fakebridge_wait(e.fb, "dev-a", 30000, h_view_births_at_least, v0.births + 1, &v);
	cr_expect_eq(v.births, v0.births + 1, "the Birth went once there was room");
	cr_expect_eq(wait_result(e.fb, 2, msg, sizeof(msg), 40000), SUCCEEDED, "%s", msg);
	cr_expect_str_eq(msg, "agent restarted");
	h_fakebridge_view(e.fb, "dev-a", &v);
	cr_expect_eq(v.bad, 0);
	cr_expect_eq(v.births, v0.births + 1, "one Birth per connection");
	cr_expect_eq(h_log_count(e.b.log, " as dev-a "), sessions + 1, "one connection");
	stop(&e);
}

/* How many times a file `name` was created in dir during the next ms milliseconds. (Deletions
 * are watched too: inotify merges an event into an identical one not yet read.) */
static int creations_during(const char *dir, const char *name, int ms)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC), n = 0;
	cr_assert_geq(fd, 0);
	cr_assert_geq(inotify_add_watch(fd, dir, IN_CREATE | IN_DELETE), 0, "%s", dir);
	h_sleep_ms(ms);
	static char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t len;
	while ((len = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + len;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			cr_assert_not(ev->mask & IN_Q_OVERFLOW);
			if ((ev->mask & IN_CREATE) && ev->len && !strcmp(ev->name, name))
				n++;
			p += sizeof(*ev) + ev->len;
		}
	}
	close(fd);
	return n;
}

/* A Birth the spool cannot number (its state file cannot be rewritten) is tried again every
 * 2 s, not on every pass of the agent's loop (every 200 ms here): each try reads every
 * unacknowledged record header and tries to rewrite the spool's state, which creates
 * spool/state.tmp. Nothing else tries it here: batches wait for batch_interval (1 h, set by
 * a task before the restart), and so does the restart's result, which keeps polls back. Once
 * there is room the Birth goes within that interval. */
Test(device_tasks, a_birth_refused_by_a_full_disk_is_retried_every_2_s, .timeout = 120)
{
	struct env e;
	struct h_device_view v0, v;
	char msg[256];
	start_polling(&e);
	h_fakebridge_mode(e.fb, H_ACK_NONE); /* the task's result stays in the spool */
	h_fakebridge_queue_task(e.fb, 2, "set_config", "batch_interval=1h batch_max_readings=16000",
				NULL, 0, 0);
	cr_assert_eq(wait_result(e.fb, 2, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
	int sessions = h_log_count(e.b.log, " as dev-a ");
	fill_disk(&e, 40);
	h_fakebridge_view(e.fb, "dev-a", &v0);
	h_fakebridge_queue_task(e.fb, 3, "restart", NULL, NULL, 0, 0);
	cr_assert(h_log_wait(e.b.log, " as dev-a ", sessions + 1, 30000),
		  "the agent restarted on a full disk did not connect: %s", e.b.log);
	char *spool = h_strf("%s/state/spool", e.d.dir);
	int tries = creations_during(spool, "state.tmp", 4500);
	cr_expect_eq(kill(e.d.pid, 0), 0, "the agent restarted on a full disk is running");
	h_fakebridge_view(e.fb, "dev-a", &v);
	cr_expect_eq(v.births, v0.births, "a Birth went with a seq the spool could not reserve");
	cr_expect(tries >= 1 && tries <= 4, "%d tries to number the Birth in 4.5 s", tries);
	make_room(&e);
	long long t0 = h_now_ms();
	cr_expect(h_fakebridge_wait(e.fb, "dev-a", 10000, h_view_births_at_least, v0.births + 1,
				    &v), "no Birth once there was room");
	cr_expect_lt(h_now_ms() - t0, 4000, "the Birth waited %lld ms", h_now_ms() - t0);
	free(spool);
	stop(&e);
}

/* A stop (systemd's or docker's SIGTERM) that comes while a `restart` task is carried out wins:
 * the agent exits 0 and does not start again. It used to be lost (the agent went on to execv)
 * or to kill the new image before its handlers were in place, and a service manager had to
 * SIGKILL the agent that came back. The signal comes as the task begins (the main loop sees
 * it), then once the agent has left its loop (it is tearing down, ~1 s for the MQTT client, on
 * its way to execv); should it land in the new image, that one has not run either. The next
 * agent reports each such task failed ("agent stopped before restarting"), not "agent
 * restarted": it finds no record that the one before reached execv. */
Test(device_tasks, a_stop_during_a_restart_task_wins, .timeout = 90)
{
	struct env e;
	char msg[256];
	const char *const extra[] = {"--poll-interval", "1s", NULL};
	start_polling(&e);
	for (int round = 0; round < 2; round++) {
		uint64_t id = 30 + (uint64_t)round;
		char *begun = h_strf("task %llu: restarting the agent", (unsigned long long)id);
		const char *when = round == 0 ? begun : "stopping for a restart";
		int started = h_log_count(e.d.log, "started: broker");
		int seen = h_log_count(e.d.log, when); /* round 0 may have logged it too */
		int in_new = h_log_count(e.d.log, "asked to before the agent started");
		h_fakebridge_queue_task(e.fb, id, "restart", NULL, NULL, 0, 0);
		for (int i = 0; i < 5000 && h_log_count(e.d.log, when) == seen; i++)
			h_sleep_ms(2);
		cr_assert_eq(h_log_count(e.d.log, when), seen + 1, "round %d: %s", round, e.d.log);
		cr_assert_eq(kill(e.d.pid, SIGTERM), 0);
		int st = h_wait_exit(e.d.pid, 15000);
		if (st == -1)
			h_device_stop(&e.d);
		e.d.pid = 0;
		cr_expect_eq(st, 0,
			     "round %d: exit status %d (-1: still running 15 s after SIGTERM): %s",
			     round, st, e.d.log);
		cr_expect_eq(h_log_count(e.d.log, "started: broker"), started,
			     "round %d: the agent ran again: %s", round, e.d.log);
		cr_expect_eq(h_log_count(e.d.log, "Sanitizer"), 0, "%s", e.d.log);
		free(begun);
		h_device_start(&e.d, &e.b, "dev-a", extra);
		cr_assert(h_log_wait(e.d.log, "connected to", 2 + round, 15000), "%s", e.d.log);
		/* a signal that landed in the new image (it stopped before it ran): the agent did
		 * execute itself again */
		int landed = h_log_count(e.d.log, "asked to before the agent started") > in_new;
		cr_expect_eq(wait_result(e.fb, id, msg, sizeof(msg), 15000),
			     landed ? SUCCEEDED : FAILED, "round %d: %s", round, msg);
		cr_expect_str_eq(msg, landed ? "agent restarted" : "agent stopped before restarting",
				 "round %d", round);
	}
	stop(&e);
}

/* A copy of the built agent at path, executable. */
static void copy_agent(const char *path)
{
	size_t len;
	char *bin = h_read_file(OUTPOST_DEVICE_BIN, &len);
	cr_assert_not_null(bin);
	cr_assert_eq(h_write_file(path, bin, len), 0, "%s", path);
	cr_assert_eq(chmod(path, 0755), 0, "%s", path);
	free(bin);
}

/* The agent run from a copy of it at path (polling every second), answering tasks. */
static void start_copy(struct env *e, const char *path)
{
	char msg[256];
	copy_agent(path);
	e->d.bin = path;
	h_broker_start(&e->b, h_pki());
	e->fb = h_fakebridge_start(&e->b, H_ACK_NORMAL);
	const char *extra[] = {"--poll-interval", "1s", NULL};
	h_device_start(&e->d, &e->b, "dev-a", extra);
	h_fakebridge_queue_task(e->fb, 1, "ping", NULL, NULL, 0, 0);
	cr_assert_eq(wait_result(e->fb, 1, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
}

/* A `restart` after a package update runs the new binary: the one now at the path the agent was
 * started from (a file renamed over the old one, as package managers install), not the deleted
 * one /proc/self/exe still names. Here the "new version" is a script that leaves a mark, then
 * executes the agent. */
Test(device_tasks, a_restart_runs_the_binary_now_at_the_agents_path, .timeout = 90)
{
	struct env e;
	char msg[256];
	memset(&e, 0, sizeof(e));
	char *dir = h_tmpdir("update");
	char *path = h_strf("%s/outpost-device", dir), *next = h_strf("%s/next", dir);
	char *real = h_strf("%s/outpost-device-2", dir), *mark = h_strf("%s/mark", dir);
	copy_agent(real);
	start_copy(&e, path);

	char *script = h_strf("#!/bin/sh\necho updated > '%s'\nexec '%s' \"$@\"\n", mark, real);
	cr_assert_eq(h_write_text(next, script), 0);
	cr_assert_eq(chmod(next, 0755), 0);
	cr_assert_eq(rename(next, path), 0);
	h_fakebridge_queue_task(e.fb, 2, "restart", NULL, NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 2, msg, sizeof(msg), 20000), SUCCEEDED, "%s", msg);
	cr_expect_str_eq(msg, "agent restarted");
	cr_expect_gt(h_file_size(mark), 0, "the restart did not run the new binary: %s", e.d.log);
	cr_expect_eq(h_log_count(e.d.log, "cannot execute"), 0, "%s", e.d.log);
	stop(&e);
	free(script);
	free(dir);
	free(path);
	free(next);
	free(real);
	free(mark);
}

/* A `restart` whose binary cannot be executed at all (here its mode lost the x bits, so
 * /proc/self/exe, the same file, fails too) leaves the agent running in the same process: a
 * device without a service manager would have been left without one. The task is reported
 * failed. */
Test(device_tasks, a_restart_that_cannot_execute_goes_on_running, .timeout = 90)
{
	struct env e;
	char msg[256];
	memset(&e, 0, sizeof(e));
	char *dir = h_tmpdir("noexec");
	char *path = h_strf("%s/outpost-device", dir);
	start_copy(&e, path);
	pid_t pid = e.d.pid;
	cr_assert_eq(chmod(path, 0644), 0);
	h_fakebridge_queue_task(e.fb, 2, "restart", NULL, NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 2, msg, sizeof(msg), 20000), FAILED, "%s", msg);
	cr_expect_str_eq(msg, "agent stopped before restarting");
	cr_expect(h_log_wait(e.d.log, "the agent goes on in this process", 1, 1000), "%s",
		  e.d.log);
	cr_expect_eq(kill(pid, 0), 0, "the agent is gone: %s", e.d.log);
	cr_expect_eq(e.d.pid, pid);
	h_fakebridge_queue_task(e.fb, 3, "ping", NULL, NULL, 0, 0);
	cr_expect_eq(wait_result(e.fb, 3, msg, sizeof(msg), 10000), SUCCEEDED, "%s", msg);
	cr_expect_eq(h_device_stop(&e.d), 0);
	stop(&e);
	free(dir);
	free(path);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert(f && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

/* ping's oldest_unsent_age_s once the wall clock stepped back (NTP correcting it, a device
 * without a real-time clock being set) to before an unacknowledged record: 0, as the Birth
 * says, not a negative age. */
Test(device_tasks, ping_never_reports_a_negative_age, .timeout = 60)
{
	struct env e;
	char msg[256], age[32] = "";
	const char *const extra[] = {"--poll-interval", "1s", NULL};
	memset(&e, 0, sizeof(e));
	char *dir = h_tmpdir("clock"), *shift = h_strf("%s/shift_ms", dir);
	write_text(shift, "0");
	e.d.clock_shift = shift;
	h_broker_start(&e.b, h_pki());
	e.fb = h_fakebridge_start(&e.b, H_ACK_NONE); /* what is spooled stays unacknowledged */
	h_device_start(&e.d, &e.b, "dev-a", extra);
	cr_assert(h_log_wait(e.d.log, "debug: batch ", 1, 15000), "no batch: %s", e.d.log);
	write_text(shift, "-3600000");
	h_fakebridge_queue_task(e.fb, 1, "ping", NULL, NULL, 0, 0);
	cr_assert_eq(wait_result(e.fb, 1, msg, sizeof(msg), 15000), SUCCEEDED, "%s", msg);
	cr_assert(h_fakebridge_result_output(e.fb, 1, "oldest_unsent_age_s", age, sizeof(age)));
	cr_expect_str_eq(age, "0");
	stop(&e);
	free(shift);
	free(dir);
}

/* The agent stops while its spool cannot take a batch (a full disk): the readings it holds are
 * lost with it, and its log says how many, once, whatever the rate limit that keeps repeated
 * spool errors quiet. */
Test(device_tasks, readings_a_full_disk_refuses_at_the_stop_are_counted, .timeout = 90)
{
	struct env e;
	start_polling(&e);
	fill_disk(&e, 2048);
	cr_assert(h_log_wait(e.d.log, "spool: cannot store a batch", 1, 10000), "%s", e.d.log);
	h_sleep_ms(500); /* more samples join the batch waiting in memory */
	cr_expect_eq(h_device_stop(&e.d), 0);
	char *text = h_read_file(e.d.log, NULL);
	const char *line = text ? strstr(text, "stopping: ") : NULL;
	unsigned long n = 0;
	cr_expect(line && sscanf(line, "stopping: %lu readings", &n) == 1 && n > 0, "%s", e.d.log);
	cr_expect_eq(h_count(text, " are discarded"), 1, "%s", e.d.log);
	free(text);
	stop(&e);
}
