/* cfg.h - one table-driven settings parser for every Outpost program: defaults, config file,
 * environment and command line, in that order of precedence (last wins).
 *
 * A program describes its settings once, as a table of struct cfg_opt pointing into its own
 * settings struct. The same name is the file key (sample_interval), the option
 * (--sample-interval) and the environment variable (OUTPOST_SAMPLE_INTERVAL). Errors name
 * their source: "device.conf:12: sample_interval: must be between 1s and 1d". */
#ifndef CFG_H
#define CFG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cfg_type {
	CFG_STR,      /* char *, malloc'd; bounds: min..max length (max 0 = 4096) */
	CFG_INT,      /* int64_t; bounds: min..max */
	CFG_BOOL,     /* int: 0/1 from true/false/yes/no/on/off/1/0 */
	CFG_DURATION, /* int64_t milliseconds from "250ms", "10s", "5m", "2h", "90d" (bare: s) */
	CFG_SIZE,     /* int64_t bytes from "512", "64k", "64KiB", "10MB", "1GiB" (k = 1024) */
	CFG_ENUM,     /* int: index into choices[] */
};

struct cfg_opt {
	const char *name;	     /* [a-z0-9_]+ */
	enum cfg_type type;
	size_t offset;		     /* offsetof(settings struct, field) */
	int64_t min, max;	     /* see enum cfg_type */
	const char *def;	     /* default, parsed like user input; NULL = empty/0 */
	const char *help;	     /* one line for --help */
	const char *const *choices;  /* CFG_ENUM: NULL-terminated */
};

#define CFG_ERR_MAX 256

/* Apply every default. */
int cfg_defaults(const struct cfg_opt *opts, size_t n, void *settings, char *err);

/* Read "key = value" lines ('#' comments, optional "double quotes"). Unknown keys and bad values
 * fail with "path:line: key: reason". A missing file fails with "path: <strerror>". A path
 * too long to leave room for the rest is shown as cfg_short_path gives it. */
int cfg_load_file(const struct cfg_opt *opts, size_t n, void *settings, const char *path,
		  char *err);

/* One line of a settings file for cfg_read_file: src is "path:line", key and value as
 * cfg_load_file would apply them (spaces, quotes and the comment removed; borrowed, valid
 * during the call). For a line that is not "key = value" (no '=', an unclosed quote, a NUL
 * byte, longer than the 8 KiB a line may have) key and value are NULL and err already says why.
 * Return 0 to read on, -1 to stop (err filled). */
typedef int (*cfg_line_fn)(void *arg, const char *src, const char *key, const char *value,
			   char *err);

/* Read the file as cfg_load_file does, handing each line that is neither blank nor a comment to
 * fn instead of applying it. 0; -1 if fn stopped, or with "path: <strerror>" or "path: read
 * error (<strerror>)" in err. */
int cfg_read_file(const char *path, cfg_line_fn fn, void *arg, char *err);

/* Apply PREFIX<NAME> environment variables (e.g. OUTPOST_BROKER_HOST). */
int cfg_load_env(const struct cfg_opt *opts, size_t n, void *settings, const char *prefix,
		 char *err);

/* Set one setting by name from text; source names where it came from, for errors. */
int cfg_set(const struct cfg_opt *opts, size_t n, void *settings, const char *name,
	    const char *value, const char *source, char *err);

/* The usual sequence for a program: defaults, then the file given by --config/-c (or
 * default_config if it exists, or PREFIX CONFIG env), then environment, then --name=value and
 * --name value options. --help and --version are left to the caller via the return value:
 * returns 0 ok, 1 if --help was given, 2 if --version was given, -1 on error (err filled).
 * Positional arguments are an error. Whatever it returns, settings may hold strings (the
 * defaults are set first): cfg_free them. */
int cfg_parse(const struct cfg_opt *opts, size_t n, void *settings, int argc, char **argv,
	      const char *env_prefix, const char *default_config, char *err);

/* The settings file cfg_parse reads for these arguments: the last --config/-c FILE, else the
 * file PREFIX CONFIG names, else default_config if it exists (or cannot be looked at); NULL
 * for none. Borrowed from argv, the environment or default_config. For the messages of a
 * program's own checks after cfg_parse succeeded, which name the file as cfg_parse's do. */
const char *cfg_config_file(int argc, char **argv, const char *env_prefix,
                            const char *default_config);

/* Print "  --name VALUE   help (default: def)" lines. */
void cfg_print_help(FILE *out, const struct cfg_opt *opts, size_t n, const char *env_prefix);

/* path as a message shows it, into buf (cap bytes, at least 5): whole if it fits, else "..."
 * and its end, from a '/' where there is one, so that the file's name stays; returns buf. The
 * message keeps its room for what follows the path. */
const char *cfg_short_path(const char *path, char *buf, size_t cap);

/* "a, b, c" from a NULL-terminated list, into buf (cap bytes, cut short if it does not fit);
 * returns buf. For messages that name the allowed values. */
const char *cfg_join(const char *const *list, char *buf, size_t cap);

/* Free strings held by settings. */
void cfg_free(const struct cfg_opt *opts, size_t n, void *settings);

/* Parsers, exposed for programs that take such values elsewhere (e.g. task arguments). */
int cfg_parse_duration(const char *s, int64_t *ms);
int cfg_parse_size(const char *s, int64_t *bytes);
int cfg_parse_bool(const char *s, int *v);

#endif
