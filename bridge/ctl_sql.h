/* ctl_sql.h - outpostctl's listings whose query plans matter: one statement with the device
 * filter and one without, never "(? = 0 OR device = ?)", which SQLite cannot search an index
 * with (it scans the whole table). Shared with the test that checks SQLite's plans
 * (tests/integration/test_outpostctl.c). */
#ifndef CTL_SQL_H
#define CTL_SQL_H

/* The newest events (of one device: through events_device), printed oldest first.
 * Parameters: [device key,] since, type, type, limit. */
#define CTL_SQL_EVENTS_(DEVICE)                                                                    \
	"SELECT e.at, d.device_id, e.type, e.detail FROM (SELECT id, at, device, type, detail"     \
	" FROM events WHERE " DEVICE "at >= ? AND (CAST(? AS TEXT) IS NULL OR type = ?)"           \
	" ORDER BY id DESC LIMIT ?) e LEFT JOIN devices d ON d.id = e.device ORDER BY e.id"
#define CTL_SQL_EVENTS        CTL_SQL_EVENTS_("")
#define CTL_SQL_EVENTS_DEVICE CTL_SQL_EVENTS_("device = ? AND ")

/* The newest tasks (of one device: through tasks_device), printed oldest first.
 * Parameters: [device key,] state, state, limit. */
#define CTL_SQL_TASKS_(DEVICE)                                                                     \
	"SELECT t.id, d.device_id, t.type, t.state, t.created_at, t.expires_at, t.delivered_at,"   \
	" t.finished_at, t.result_status, t.result_message FROM (SELECT * FROM tasks "             \
	"WHERE " DEVICE "(CAST(? AS TEXT) IS NULL OR state = ?) ORDER BY id DESC LIMIT ?) t"       \
	" JOIN devices d ON d.id = t.device ORDER BY t.id"
#define CTL_SQL_TASKS        CTL_SQL_TASKS_("")
#define CTL_SQL_TASKS_DEVICE CTL_SQL_TASKS_("device = ? AND ")

/* Gaps (of one device: through its key's index), open ones only unless the parameter is 1,
 * limit of them. Parameters: [device key,] all, limit. C follows the text sort key (CTL_SQL
 * in ctl.h). */
#define CTL_SQL_GAPS_(DEVICE, C)                                                                   \
	"SELECT d.device_id, g.reason, g.prev_seq, g.last_seq, g.count, g.opened_at,"              \
	" g.resolved_at, g.resolution FROM gaps g JOIN devices d ON d.id = g.device WHERE " DEVICE \
	"(CAST(? AS BIGINT) = 1 OR g.resolved_at IS NULL)"                                         \
	" ORDER BY d.device_id" C ", g.prev_seq, g.reason LIMIT ?"
#define CTL_SQL_GAPS(C)        CTL_SQL_GAPS_("", C)
#define CTL_SQL_GAPS_DEVICE(C) CTL_SQL_GAPS_("g.device = ? AND ", C)

#endif
