/* test_dev_link.c - the link's event queue, driven through its Paho callbacks without a broker:
 * a state change is never lost (a full queue of messages, no memory), events come out in the
 * order they happened, and a message that finds no room is counted. The module is compiled
 * into this test (its callbacks are static), with malloc and strdup that can be made to fail.
 * The link against a real broker: test_device.c. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static int fail_alloc; /* malloc and strdup in dev_link.c fail while set */

static void *test_malloc(size_t n)
{
	return fail_alloc ? NULL : malloc(n);
}

static char *test_strdup(const char *s)
{
	return fail_alloc ? NULL : strdup(s);
}

static int64_t fake_now = 1000000; /* the link's monotonic clock, ms */

static int64_t test_mono_ms(void)
{
	return fake_now;
}

#define malloc(n) test_malloc(n)
#define strdup(s) test_strdup(s)
#define otime_mono_ms test_mono_ms
#include "dev_link.c"
#undef malloc
#undef strdup
#undef otime_mono_ms

/* A link with options o that never dials (no dev_link_tick), and the callback context of its
 * client. */
static struct dev_link *link_with(const struct dev_link_opts *o, struct ctx_slot **slot)
{
	struct dev_link *l = NULL;
	cr_assert_eq(dev_link_new(o, NULL, NULL, &l), DEV_LINK_OK);
	*slot = &l->slots[l->gen % CTX_SLOTS];
	(*slot)->link = l;
	(*slot)->gen = l->gen;
	(*slot)->uri = "ssl://broker.test:8883";
	return l;
}

static struct dev_link *new_link(struct ctx_slot **slot)
{
	struct dev_link_opts o = {.client_id = "dev-a", .host = "broker.test", .mqtts_port = 8883,
				  .ca_file = "ca.crt", .cert_file = "dev.crt",
				  .key_file = "dev.key"};
	return link_with(&o, slot);
}

static void message(struct ctx_slot *slot, int i)
{
	char topic[64];
	snprintf(topic, sizeof(topic), "outpost/v1/dev-a/ack/%d", i);
	push_message(slot, topic, &i, sizeof(i), NULL, 0);
}

static void expect_message(struct dev_link *l, int i)
{
	struct dev_link_event ev;
	char topic[64];
	snprintf(topic, sizeof(topic), "outpost/v1/dev-a/ack/%d", i);
	cr_assert_eq(dev_link_next_event(l, &ev), 1, "message %d missing", i);
	cr_expect_eq(ev.type, DEV_LINK_MESSAGE, "message %d: event %d instead", i, (int)ev.type);
	cr_expect_str_eq(ev.text, topic);
	cr_expect(ev.len == sizeof(i) && ev.data && !memcmp(ev.data, &i, sizeof(i)));
	dev_link_event_free(&ev);
}

static void expect_state(struct dev_link *l, enum dev_link_event_type type, const char *text)
{
	struct dev_link_event ev;
	cr_assert_eq(dev_link_next_event(l, &ev), 1, "no event %d (%s)", (int)type, text);
	cr_expect_eq(ev.type, type, "event %d instead of %d (%s)", (int)ev.type, (int)type, text);
	cr_expect(strstr(ev.text, text), "%s", ev.text);
	dev_link_event_free(&ev);
}

static void expect_no_event(struct dev_link *l)
{
	struct dev_link_event ev;
	cr_expect_eq(dev_link_next_event(l, &ev), 0, "an event more: %d %s", (int)ev.type,
		     ev.text);
}

/* The connection comes up and the broker floods the device (a retained backlog, a burst of
 * acks) until the queue is full; then the connection is lost. Neither the UP at the head of
 * the full queue nor the DOWN behind it may be lost: the agent would never see the link up
 * (no Birth), or never reconnect. Messages that found the queue full are counted, and nothing
 * else is lost. */
Test(dev_link, state_changes_get_through_a_full_queue, .timeout = 30)
{
	struct ctx_slot *slot;
	struct dev_link *l = new_link(&slot);
	struct dev_link_stats st;
	on_connected(slot, NULL);
	for (int i = 0; i < EVENT_QUEUE_CAP; i++)
		message(slot, i);
	on_lost(slot, "peer went away");
	for (int i = 0; i < 5; i++)
		message(slot, EVENT_QUEUE_CAP + i); /* no room: dropped */
	dev_link_stats(l, &st);
	cr_expect_eq(st.dropped_events, 5);

	expect_state(l, DEV_LINK_UP, "ssl://broker.test:8883");
	for (int i = 0; i < EVENT_QUEUE_CAP; i++)
		expect_message(l, i);
	expect_state(l, DEV_LINK_DOWN, "peer went away");
	expect_no_event(l);
	dev_link_stats(l, &st);
	cr_expect_eq(st.connects, 1);
	cr_expect_eq(st.disconnects, 1);
	cr_expect_eq(st.dropped_events, 5, "a message was dropped to make room");
	dev_link_free(l);
}

/* With no memory to copy anything, a failed attempt and a lost connection still get through
 * (without them the link stays "connecting" forever); a message is dropped and counted. */
Test(dev_link, state_changes_need_no_memory, .timeout = 30)
{
	struct ctx_slot *slot;
	struct dev_link *l = new_link(&slot);
	struct dev_link_stats st;
	fail_alloc = 1;
	on_connect_failed(slot, NULL);
	message(slot, 1);
	fail_alloc = 0;
	expect_state(l, DEV_LINK_FAILED, "ssl://broker.test:8883: connection failed");
	expect_no_event(l);
	fail_alloc = 1;
	on_connected(slot, NULL);
	on_lost(slot, NULL);
	fail_alloc = 0;
	expect_state(l, DEV_LINK_UP, "ssl://broker.test:8883");
	expect_state(l, DEV_LINK_DOWN, "connection lost");
	expect_no_event(l);
	dev_link_stats(l, &st);
	cr_expect_eq(st.dropped_events, 1);
	cr_expect_eq(st.failures, 1);
	dev_link_free(l);
}

/* A late callback of a client already destroyed neither comes out nor takes the place of the
 * current client's state change. */
Test(dev_link, a_destroyed_clients_state_change_is_ignored, .timeout = 30)
{
	struct ctx_slot *slot;
	struct dev_link *l = new_link(&slot);
	struct ctx_slot *old = &l->slots[(l->gen + CTX_SLOTS - 1) % CTX_SLOTS];
	*old = *slot;
	old->gen = l->gen - 1;
	on_lost(old, "the old client's");
	expect_no_event(l);
	on_lost(old, "the old client's, again");
	on_lost(slot, "the current client's");
	expect_state(l, DEV_LINK_DOWN, "the current client's");
	expect_no_event(l);
	dev_link_free(l);
}

/* Events come out in the order they happened, state changes and messages mixed; of several
 * ends of one client the first is the one reported (what follows it is moot). */
Test(dev_link, events_keep_their_order, .timeout = 30)
{
	struct ctx_slot *slot;
	struct dev_link *l = new_link(&slot);
	MQTTAsync_successData5 granted = MQTTAsync_successData5_initializer;
	on_connected(slot, NULL);
	message(slot, 1);
	on_subscribed(slot, &granted); /* internal: settles the backoff, never returned */
	message(slot, 2);
	subscription_refused(slot, MQTTREASONCODE_NOT_AUTHORIZED);
	on_lost(slot, "lost after the refusal");
	expect_state(l, DEV_LINK_UP, "ssl://");
	expect_message(l, 1);
	expect_message(l, 2);
	expect_state(l, DEV_LINK_DOWN, "the broker refused the subscriptions");
	expect_no_event(l);
	dev_link_free(l);
}

/* A link that subscribes, with the agent's default backoff: 1 s .. 5 min, 30 s spread. */
static struct dev_link *new_subscribing_link(struct ctx_slot **slot)
{
	static const char *const subs[] = {"outpost/v1/dev-a/ack", NULL};
	struct dev_link_opts o = {.client_id = "dev-a", .host = "broker.test", .mqtts_port = 8883,
				  .ca_file = "ca.crt", .cert_file = "dev.crt",
				  .key_file = "dev.key", .backoff_min_ms = 1000,
				  .backoff_max_ms = 300000, .reconnect_spread_ms = 30000,
				  .subscribe = subs};
	return link_with(&o, slot);
}

/* The connection comes up, the subscriptions are granted, and up_ms later it is lost; the
 * window the next retry was drawn from. */
static int64_t up_then_lost(struct dev_link *l, struct ctx_slot *slot, int64_t up_ms)
{
	MQTTAsync_successData5 granted = MQTTAsync_successData5_initializer;
	struct dev_link_stats st;
	on_connected(slot, NULL);
	expect_state(l, DEV_LINK_UP, "ssl://");
	on_subscribed(slot, &granted);
	expect_no_event(l);
	fake_now += up_ms;
	on_disconnected(slot, NULL, MQTTREASONCODE_SESSION_TAKEN_OVER);
	expect_state(l, DEV_LINK_DOWN, "Session taken over");
	dev_link_stats(l, &st);
	fake_now += st.last_delay_ms;
	return st.last_window_ms;
}

/* Two devices on one certificate take the session from each other: each connects, is granted
 * its subscriptions and is kicked at once. Those are failures, backing off to backoff_max,
 * not a fresh start of the backoff at every connect (every 0..30 s, forever). A connection
 * that stayed up for DEV_LINK_STABLE_MS worked: the next loss starts afresh. */
Test(dev_link, a_connection_kicked_at_once_backs_off, .timeout = 30)
{
	struct ctx_slot *slot;
	struct dev_link *l = new_subscribing_link(&slot);
	const int64_t windows[] = {30000, 60000, 120000, 240000, 300000, 300000};
	for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
		int64_t w = up_then_lost(l, slot, 200);
		cr_expect_eq(w, windows[i], "kick %zu: window %lld ms, not %lld", i + 1,
			     (long long)w, (long long)windows[i]);
	}
	int64_t w = up_then_lost(l, slot, DEV_LINK_STABLE_MS - 1);
	cr_expect_eq(w, 300000, "up for less than DEV_LINK_STABLE_MS: window %lld", (long long)w);
	w = up_then_lost(l, slot, DEV_LINK_STABLE_MS);
	cr_expect_eq(w, 30000, "up for DEV_LINK_STABLE_MS: window %lld, not afresh", (long long)w);
	w = up_then_lost(l, slot, 100);
	cr_expect_eq(w, 60000, "kicked at once again: window %lld", (long long)w);
	dev_link_free(l);
}

/* Full jitter: with a seeded stream, the delays of one window spread over all of it, none
 * above it; a draw that always takes the window's end (or its start) fails. */
Test(dev_link, retry_delays_spread_over_their_window, .timeout = 30)
{
	struct ctx_slot *slot;
	struct dev_link *l = new_subscribing_link(&slot);
	struct dev_link_stats st;
	int64_t lo = INT64_MAX, hi = -1;
	l->rng = 0x9e3779b97f4a7c15ull;
	l->first_window_ms = 30000;
	l->failures_in_row = 1;
	for (int i = 0; i < 1000; i++) {
		schedule_retry(l, fake_now);
		dev_link_stats(l, &st);
		cr_assert_eq(st.last_window_ms, 30000);
		cr_assert(st.last_delay_ms >= 0 && st.last_delay_ms <= 30000, "delay %lld",
			  (long long)st.last_delay_ms);
		cr_assert_eq(l->next_attempt, fake_now + st.last_delay_ms);
		lo = st.last_delay_ms < lo ? st.last_delay_ms : lo;
		hi = st.last_delay_ms > hi ? st.last_delay_ms : hi;
	}
	cr_expect_lt(lo, 1000, "smallest of 1000 delays in 0..30000: %lld", (long long)lo);
	cr_expect_gt(hi, 29000, "largest of 1000 delays in 0..30000: %lld", (long long)hi);
	dev_link_free(l);
}
