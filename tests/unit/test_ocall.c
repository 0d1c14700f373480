/* test_ocall.c - a blocking call waited for until a deadline: in time, its result is the
 * caller's; late, it finishes alone and late() gets its argument, and whichever side lets go
 * last frees the call's state (ASan: no leak, no use after free, however the two race). */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "harness.h"
#include "ocall.h"
#include "otime.h"

static atomic_int lates, finished, misordered;

struct job {
	int sleep_ms;
	int result;
};

static void job_run(void *arg)
{
	struct job *j = arg;
	if (j->sleep_ms)
		h_sleep_ms(j->sleep_ms);
	j->result = 42;
	atomic_fetch_add(&finished, 1);
}

static void job_late(void *arg)
{
	struct job *j = arg;
	if (j->result != 42) /* late runs after the call, on what it left */
		atomic_fetch_add(&misordered, 1);
	free(j);
	atomic_fetch_add(&lates, 1);
}

static struct job *job_new(int sleep_ms)
{
	struct job *j = calloc(1, sizeof(*j));
	cr_assert_not_null(j);
	j->sleep_ms = sleep_ms;
	return j;
}

/* Wait up to 10 s for counter to reach want. */
static int reaches(atomic_int *counter, int want)
{
	long long end = h_now_ms() + 10000;
	while (atomic_load(counter) < want && h_now_ms() < end)
		h_sleep_ms(10);
	return atomic_load(counter) == want;
}

Test(ocall, a_call_in_time_leaves_its_result_to_the_caller, .timeout = 30)
{
	struct job *j = job_new(50);
	int64_t start = otime_mono_ms();
	cr_expect_eq(ocall_until(job_run, j, job_late, start + 10000), OCALL_OK);
	cr_expect_lt(otime_mono_ms() - start, 5000, "returns when the call does");
	cr_expect_eq(j->result, 42);
	free(j);
	cr_expect_eq(atomic_load(&lates), 0, "late is only for a call given up on");
}

Test(ocall, a_late_call_finishes_alone_and_late_frees_its_argument, .timeout = 30)
{
	struct job *j = job_new(800);
	int64_t start = otime_mono_ms();
	cr_expect_eq(ocall_until(job_run, j, job_late, start + 100), OCALL_ELATE);
	int64_t waited = otime_mono_ms() - start;
	cr_expect(waited >= 100 && waited < 700, "gave up after %lld ms", (long long)waited);
	cr_expect_eq(atomic_load(&finished), 0);
	cr_expect(reaches(&lates, 1), "late ran %d times", atomic_load(&lates));
	cr_expect_eq(atomic_load(&finished), 1);
	cr_expect_eq(atomic_load(&misordered), 0);
	h_sleep_ms(50); /* the thread's last steps: freeing the call's state */
}

Test(ocall, without_late_the_argument_stays_the_callers, .timeout = 30)
{
	static struct job j = {.sleep_ms = 300};
	cr_expect_eq(ocall_until(job_run, &j, NULL, otime_mono_ms() + 20), OCALL_ELATE);
	cr_expect(reaches(&finished, 1));
	cr_expect_eq(j.result, 42);
	h_sleep_ms(50);
}

/* At the deadline the caller and the thread race to let go: each outcome is counted once,
 * late runs exactly for the calls given up on, and ASan sees every state freed once. */
Test(ocall, a_call_ending_at_its_deadline_is_freed_once_either_way, .timeout = 60)
{
	enum { CALLS = 300 };
	int in_time = 0, given_up = 0;
	for (int i = 0; i < CALLS; i++) {
		struct job *j = job_new(i % 3);
		int rc = ocall_until(job_run, j, job_late, otime_mono_ms() + i % 2);
		if (rc == OCALL_OK) {
			in_time++;
			free(j);
		} else {
			cr_assert_eq(rc, OCALL_ELATE);
			given_up++;
		}
	}
	cr_expect(reaches(&finished, CALLS));
	cr_expect(reaches(&lates, given_up), "late ran %d times for %d calls given up on",
	          atomic_load(&lates), given_up);
	cr_expect_eq(in_time + given_up, CALLS);
	cr_expect_eq(atomic_load(&misordered), 0);
	cr_log_info("%d calls in time, %d given up on", in_time, given_up);
	h_sleep_ms(100);
}
