/* cfg.c - table-driven settings: defaults, file, environment, command line. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cfg.h"

#define CFG_STR_DEFAULT_MAX 4096
#define CFG_LINE_MAX 8192

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, CFG_ERR_MAX, fmt, ap);
		va_end(ap);
	}
	return -1;
}

const char *cfg_join(const char *const *list, char *buf, size_t cap)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; list && list[i] && len < cap; i++) {
		int n = snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", list[i]);
		if (n < 0)
			break;
		len += (size_t)n;
	}
	return buf;
}

static int parse_int(const char *s, int64_t *v)
{
	char *end;
	errno = 0;
	long long x = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return -1;
	*v = x;
	return 0;
}

/* "<number><unit>" with units from the table; a bare number uses the first unit. */
struct unit {
	const char *name;
	int64_t mult;
};

static int parse_with_units(const char *s, const struct unit *units, int64_t *out)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	while (*end == ' ')
		end++;
	int64_t mult = 0;
	if (!*end) {
		mult = units[0].mult;
	} else {
		for (const struct unit *u = units; u->name; u++)
			if (!strcasecmp(end, u->name))
				mult = u->mult;
	}
	if (!mult || x > (unsigned long long)(INT64_MAX / mult))
		return -1;
	*out = (int64_t)x * mult;
	return 0;
}

int cfg_parse_duration(const char *s, int64_t *ms)
{
	static const struct unit u[] = {{"s", 1000},	 {"ms", 1},	    {"sec", 1000},
					{"m", 60000},	 {"min", 60000},    {"h", 3600000},
					{"d", 86400000}, {"day", 86400000}, {"days", 86400000},
					{NULL, 0}};
	return parse_with_units(s, u, ms);
}

int cfg_parse_size(const char *s, int64_t *bytes)
{
	static const struct unit u[] = {
		{"b", 1},	       {"k", 1024},	   {"kb", 1024},      {"kib", 1024},
		{"m", 1 << 20},	       {"mb", 1 << 20},	   {"mib", 1 << 20},  {"g", 1 << 30},
		{"gb", 1 << 30},       {"gib", 1 << 30},   {NULL, 0}};
	return parse_with_units(s, u, bytes);
}

int cfg_parse_bool(const char *s, int *v)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};
	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*v = 1;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*v = 0;
			return 0;
		}
	}
	return -1;
}

static void fmt_duration(int64_t ms, char *buf, size_t cap)
{
	if (ms % 86400000 == 0 && ms)
		snprintf(buf, cap, "%lldd", (long long)(ms / 86400000));
	else if (ms % 3600000 == 0 && ms)
		snprintf(buf, cap, "%lldh", (long long)(ms / 3600000));
	else if (ms % 60000 == 0 && ms)
		snprintf(buf, cap, "%lldm", (long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(buf, cap, "%llds", (long long)(ms / 1000));
	else
		snprintf(buf, cap, "%lldms", (long long)ms);
}

static const struct cfg_opt *find(const struct cfg_opt *opts, size_t n, const char *name,
				  size_t len)
{
	for (size_t i = 0; i < n; i++) {
		const char *o = opts[i].name;
		size_t j = 0;
		for (; j < len && o[j]; j++) {
			char c = name[j] == '-' ? '_' : name[j];
			if (c != o[j])
				break;
		}
		if (j == len && !o[j])
			return &opts[i];
	}
	return NULL;
}

static int apply(const struct cfg_opt *o, void *settings, const char *value, const char *src,
		 char *err)
{
	char *field = (char *)settings + o->offset;
	int64_t v;
	char a[32], b[32];

	switch (o->type) {
	case CFG_STR: {
		size_t max = o->max ? (size_t)o->max : CFG_STR_DEFAULT_MAX;
		if (strlen(value) > max)
			return fail(err, "%s: %s: longer than %zu characters", src, o->name, max);
		if (o->min > 0 && strlen(value) < (size_t)o->min)
			return fail(err, "%s: %s: %s", src, o->name,
			            o->min == 1 ? "must not be empty" : "too short");
		char *copy = strdup(value);
		if (!copy)
			return fail(err, "%s: %s: out of memory", src, o->name);
		free(*(char **)field);
		*(char **)field = copy;
		return 0;
	}
	case CFG_BOOL: {
		int x;
		if (cfg_parse_bool(value, &x))
			return fail(err, "%s: %s: expected true or false, got '%s'", src, o->name, value);
		*(int *)field = x;
		return 0;
	}
	case CFG_ENUM: {
		char allowed[128];
		for (int i = 0; o->choices && o->choices[i]; i++) {
			if (!strcmp(value, o->choices[i])) {
				*(int *)field = i;
				return 0;
			}
		}
		return fail(err, "%s: %s: '%s' is not one of: %s", src, o->name, value,
			    cfg_join(o->choices, allowed, sizeof(allowed)));
	}
	case CFG_INT:
		if (parse_int(value, &v))
			return fail(err, "%s: %s: expected an integer, got '%s'", src, o->name, value);
		if (v < o->min || v > o->max)
			return fail(err, "%s: %s: must be between %lld and %lld", src, o->name,
				    (long long)o->min, (long long)o->max);
		*(int64_t *)field = v;
		return 0;
	case CFG_DURATION:
		if (cfg_parse_duration(value, &v))
			return fail(err, "%s: %s: expected a duration like 10s, 5m, 2h, 90d, got '%s'", src,
				    o->name, value);
		if (v < o->min || v > o->max) {
			fmt_duration(o->min, a, sizeof(a));
			fmt_duration(o->max, b, sizeof(b));
			return fail(err, "%s: %s: must be between %s and %s", src, o->name, a, b);
		}
		*(int64_t *)field = v;
		return 0;
	case CFG_SIZE:
		if (cfg_parse_size(value, &v))
			return fail(err, "%s: %s: expected a size like 512k, 64MiB, 1G, got '%s'", src,
				    o->name, value);
		if (v < o->min || v > o->max)
			return fail(err, "%s: %s: must be between %lld and %lld bytes", src, o->name,
				    (long long)o->min, (long long)o->max);
		*(int64_t *)field = v;
		return 0;
	}
	return fail(err, "%s: %s: unsupported setting type", src, o->name);
}

int cfg_set(const struct cfg_opt *opts, size_t n, void *settings, const char *name,
	    const char *value, const char *source, char *err)
{
	const struct cfg_opt *o = find(opts, n, name, strlen(name));
	if (!o)
		return fail(err, "%s: %s: unknown setting", source, name);
	return apply(o, settings, value, source, err);
}

int cfg_defaults(const struct cfg_opt *opts, size_t n, void *settings, char *err)
{
	for (size_t i = 0; i < n; i++) {
		if (!opts[i].def)
			continue;
		if (apply(&opts[i], settings, opts[i].def, "default", err))
			return -1;
	}
	return 0;
}

const char *cfg_short_path(const char *path, char *buf, size_t cap)
{
	size_t len = strlen(path);
	if (len < cap) {
		memcpy(buf, path, len + 1);
		return buf;
	}
	/* its end, which names the file; from a '/' if one is there, not in a name's middle */
	const char *tail = path + len - (cap - 4), *slash = strchr(tail, '/');
	if (slash)
		tail = slash;
	memcpy(buf, "...", 3);
	memcpy(buf + 3, tail, strlen(tail) + 1);
	return buf;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* One line of f into buf (its newline dropped, NUL-terminated) with its length in *len, which
 * counts any NUL byte in it (fgets would leave the line's end unknown). A line longer than
 * CFG_LINE_MAX - 2 bytes is read to its end but not kept. 0 at the end of the file, else 1, or
 * 2 for a line too long. The errno of the first read error goes into *read_errno. */
static int read_line(FILE *f, char buf[CFG_LINE_MAX], size_t *len, int *read_errno)
{
	size_t n = 0;
	int c, too_long = 0;
	while ((c = getc(f)) != EOF && c != '\n') {
		if (n < CFG_LINE_MAX - 2)
			buf[n++] = (char)c;
		else
			too_long = 1;
	}
	if (c == EOF && ferror(f) && !*read_errno)
		*read_errno = errno ? errno : EIO;
	buf[n] = '\0';
	*len = n;
	if (c == EOF && !n && !too_long)
		return 0;
	return too_long ? 2 : 1;
}

int cfg_read_file(const char *path, cfg_line_fn fn, void *arg, char *err)
{
	FILE *f = fopen(path, "r");
	/* the path cut so that what follows it in a message (":line: key: reason") fits in
	 * CFG_ERR_MAX */
	char line[CFG_LINE_MAX], shown[CFG_ERR_MAX / 2], src[sizeof(shown) + 16];
	int rc = 0, got, read_errno = 0;
	unsigned lineno = 0;
	size_t len;

	cfg_short_path(path, shown, sizeof(shown));
	if (!f)
		return fail(err, "%s: %s", shown, strerror(errno));
	while (!rc && (got = read_line(f, line, &len, &read_errno))) {
		lineno++;
		snprintf(src, sizeof(src), "%s:%u", shown, lineno);
		if (got == 2) {
			fail(err, "%s: line longer than %d bytes", src, CFG_LINE_MAX - 2);
			rc = fn(arg, src, NULL, NULL, err);
			continue;
		}
		/* what follows a NUL would be cut off unseen (a binary or corrupted file) */
		const char *nul = memchr(line, '\0', len);
		if (nul) {
			fail(err, "%s: NUL byte at column %zu (not a text file?)", src,
			     (size_t)(nul - line) + 1);
			rc = fn(arg, src, NULL, NULL, err);
			continue;
		}
		char *s = trim(line);
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			fail(err, "%s: expected 'key = value'", src);
			rc = fn(arg, src, NULL, NULL, err);
			continue;
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		if (value[0] == '"') {
			/* "quoted value" keeps spaces and '#'; only a comment may follow it */
			char *close = strchr(value + 1, '"'), *rest;
			if (!close) {
				fail(err, "%s: %s: missing closing quote", src, key);
				rc = fn(arg, src, NULL, NULL, err);
				continue;
			}
			for (rest = close + 1; isspace((unsigned char)*rest); rest++)
				;
			if (*rest && *rest != '#') {
				fail(err, "%s: %s: unexpected text after the closing quote", src,
				     key);
				rc = fn(arg, src, NULL, NULL, err);
				continue;
			}
			*close = '\0';
			value++;
		} else {
			/* a '#' at the start or after a space or tab starts a comment ("key =
			 * # note" is an empty value); "a#b" is a value */
			for (char *p = value; *p; p++) {
				if (*p == '#' && (p == value || isspace((unsigned char)p[-1]))) {
					*p = '\0';
					break;
				}
			}
			value = trim(value);
		}
		rc = fn(arg, src, key, value, err);
	}
	if (!rc && ferror(f))
		rc = fail(err, "%s: read error (%s)", shown,
			  strerror(read_errno ? read_errno : EIO));
	fclose(f);
	return rc ? -1 : 0;
}

struct load {
	const struct cfg_opt *opts;
	size_t n;
	void *settings;
};

/* cfg_load_file's line: a syntax error or an unknown key stops the read */
static int load_line(void *arg, const char *src, const char *key, const char *value, char *err)
{
	const struct load *l = arg;
	if (!key)
		return -1;
	const struct cfg_opt *o = find(l->opts, l->n, key, strlen(key));
	if (!o)
		return fail(err, "%s: %s: unknown setting", src, key);
	return apply(o, l->settings, value, src, err);
}

int cfg_load_file(const struct cfg_opt *opts, size_t n, void *settings, const char *path,
		  char *err)
{
	struct load l = {opts, n, settings};
	return cfg_read_file(path, load_line, &l, err);
}

static void env_name(char *buf, size_t cap, const char *prefix, const char *name)
{
	size_t i = 0;
	for (const char *p = prefix; *p && i + 1 < cap; p++)
		buf[i++] = *p;
	for (const char *p = name; *p && i + 1 < cap; p++)
		buf[i++] = (char)toupper((unsigned char)*p);
	buf[i] = '\0';
}

int cfg_load_env(const struct cfg_opt *opts, size_t n, void *settings, const char *prefix,
		 char *err)
{
	char var[128], src[160];
	for (size_t i = 0; i < n; i++) {
		env_name(var, sizeof(var), prefix, opts[i].name);
		const char *v = getenv(var);
		if (!v)
			continue;
		snprintf(src, sizeof(src), "environment %s", var);
		if (apply(&opts[i], settings, v, src, err))
			return -1;
	}
	return 0;
}

/* 1 if argv[i] is an option that takes argv[i + 1] as its value; a bool takes it only if it
 * is not an option itself ("--verbose -h", "--verbose --x=1", but "--verbose false"). */
static int takes_next(const struct cfg_opt *opts, size_t n, int argc, char **argv, int i)
{
	const char *a = argv[i];
	if (i + 1 >= argc)
		return 0;
	if (!strcmp(a, "--config") || !strcmp(a, "-c"))
		return 1;
	if (strncmp(a, "--", 2) || strchr(a, '='))
		return 0;
	const struct cfg_opt *o = find(opts, n, a + 2, strlen(a + 2));
	return o && (o->type != CFG_BOOL || argv[i + 1][0] != '-');
}

/* cfg_config_file, with err for a --config without a file or an empty PREFIX CONFIG */
static int config_file(int argc, char **argv, const char *env_prefix, const char *default_config,
                       const char **path, char *err)
{
	const char *config = NULL;
	char var[128];

	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) && i + 1 < argc)
			config = argv[++i];
		else if (!strncmp(argv[i], "--config=", 9))
			config = argv[i] + 9;
		else if (!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c"))
			return fail(err, "command line: %s needs a file", argv[i]);
	}
	env_name(var, sizeof(var), env_prefix, "config");
	if (!config && (config = getenv(var)) && !*config)
		return fail(err, "environment: %s is set but empty (unset it, or name a file)", var);
	if (config && !*config)
		return fail(err, "command line: --config needs a file");
	/* a default that exists is read, or why not said (an unreadable one is not "absent") */
	if (!config && default_config && (access(default_config, F_OK) == 0 || errno != ENOENT))
		config = default_config;
	*path = config;
	return 0;
}

const char *cfg_config_file(int argc, char **argv, const char *env_prefix,
                            const char *default_config)
{
	const char *path = NULL;
	return config_file(argc, argv, env_prefix, default_config, &path, NULL) ? NULL : path;
}

int cfg_parse(const struct cfg_opt *opts, size_t n, void *settings, int argc, char **argv,
	      const char *env_prefix, const char *default_config, char *err)
{
	const char *config = NULL;

	/* --help anywhere an option may stand, not as the value of another ("--device-id -h") */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
		if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V"))
			return 2;
		i += takes_next(opts, n, argc, argv, i);
	}
	if (cfg_defaults(opts, n, settings, err))
		return -1;
	/* Find the config file first: it sits below environment and options. */
	if (config_file(argc, argv, env_prefix, default_config, &config, err))
		return -1;
	if (config && cfg_load_file(opts, n, settings, config, err))
		return -1;
	if (cfg_load_env(opts, n, settings, env_prefix, err))
		return -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--config") || !strcmp(a, "-c")) {
			i++;
			continue;
		}
		if (!strncmp(a, "--config=", 9))
			continue;
		if (strncmp(a, "--", 2) != 0)
			return fail(err, "command line: unexpected argument '%s'", a);
		a += 2;
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		const struct cfg_opt *o = find(opts, n, a, len);
		if (!o)
			return fail(err, "command line: --%.*s: unknown option", (int)len, a);
		const char *value;
		if (eq)
			value = eq + 1;
		else if (takes_next(opts, n, argc, argv, i))
			value = argv[++i];
		else if (o->type == CFG_BOOL)
			value = "true";
		else
			return fail(err, "command line: --%s needs a value", o->name);
		if (apply(o, settings, value, "command line", err))
			return -1;
	}
	return 0;
}

void cfg_print_help(FILE *out, const struct cfg_opt *opts, size_t n, const char *env_prefix)
{
	char opt[64], var[128];
	for (size_t i = 0; i < n; i++) {
		const struct cfg_opt *o = &opts[i];
		size_t j = 0;
		for (const char *p = o->name; *p && j + 1 < sizeof(opt); p++)
			opt[j++] = *p == '_' ? '-' : *p;
		opt[j] = '\0';
		env_name(var, sizeof(var), env_prefix, o->name);
		fprintf(out, "  --%-22s %s", opt, o->help ? o->help : "");
		if (o->def && *o->def)
			fprintf(out, " [%s]", o->def);
		if (o->type == CFG_ENUM && o->choices) {
			fprintf(out, " (");
			for (int k = 0; o->choices[k]; k++)
				fprintf(out, "%s%s", k ? "|" : "", o->choices[k]);
			fprintf(out, ")");
		}
		fprintf(out, "\n");
	}
	fprintf(out, "Every option is also a config file key (name with '_') and an environment\n"
		     "variable %s<NAME>. Precedence: option > environment > file > default.\n",
		env_prefix);
}

void cfg_free(const struct cfg_opt *opts, size_t n, void *settings)
{
	for (size_t i = 0; i < n; i++) {
		if (opts[i].type != CFG_STR)
			continue;
		char **p = (char **)((char *)settings + opts[i].offset);
		free(*p);
		*p = NULL;
	}
}
