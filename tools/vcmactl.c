// SPDX-License-Identifier: MIT
/*
 * vcmactl.c - the operator's command line for vcmad: what the pools hold, who owns
 * what, how fragmented it is, and a few actions. Talks to vcmad's control socket
 * (hv/ctl/ctl_proto.h): one JSON request line, one JSON response line.
 *
 * Exit status: 0 ok, 1 the operation failed or vcmad could not be reached (the
 * reason on stderr), 2 usage error. The help texts here and docs/man/vcmactl.1.scd
 * describe the same commands and options; tests/ctl checks that they agree.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl/ctl_proto.h"
#include "pool_config.h"
#include "vcmactl.h"

#ifndef VCMA_VERSION
#define VCMA_VERSION "unknown"
#endif

#define REPLY_MAX (256u << 20) /* a response larger than this is not vcmad's */
#define REPLY_TIMEOUT_MS 30000
#define MAP_WIDTH 256u /* map characters vcmactl asks for by default */

struct ctx {
	const char *socket;
	bool json;
	int fd;
	char *buf;
	size_t len, cap;
	int64_t next_id;
};

/* ---- messages ---- */

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void errorf(const char *fmt, ...)
{
	va_list ap;

	fputs("vcmactl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- the connection ---- */

static int ctx_connect(struct ctx *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(c->socket);

	if (c->fd >= 0)
		return 0;
	if (!n || n >= sizeof(sa.sun_path)) {
		errorf("socket path '%s' is too long", c->socket);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, c->socket, n + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		errorf("socket: %s", strerror(errno));
		return -errno;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int e = errno;

		if (e == ENOENT || e == ECONNREFUSED)
			errorf("cannot connect to %s: %s (is vcmad running? --socket or $VCMA_CTL_SOCKET "
			       "name another socket)", c->socket, strerror(e));
		else if (e == EACCES || e == EPERM)
			errorf("cannot connect to %s: %s (the control socket is for root and vcmad's ctl_group)",
			       c->socket, strerror(e));
		else
			errorf("cannot connect to %s: %s", c->socket, strerror(e));
		close(c->fd);
		c->fd = -1;
		return -e;
	}
	return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* One response line (without its newline) into c->buf; returns its length. */
static ssize_t read_line(struct ctx *c)
{
	size_t scanned = 0;

	c->len = 0;
	for (;;) {
		char *nl = c->len > scanned ? memchr(c->buf + scanned, '\n', c->len - scanned) : NULL;
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		ssize_t k;
		int rc;

		if (nl)
			return nl - c->buf;
		scanned = c->len;
		if (c->len + 65536 > c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 131072;
			char *p;

			if (cap > REPLY_MAX) {
				errorf("response from vcmad larger than %u MiB", REPLY_MAX >> 20);
				return -EMSGSIZE;
			}
			p = realloc(c->buf, cap);
			if (!p) {
				errorf("out of memory");
				return -ENOMEM;
			}
			c->buf = p;
			c->cap = cap;
		}
		rc = poll(&pfd, 1, REPLY_TIMEOUT_MS);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc == 0) {
			errorf("no response from vcmad within %d s", REPLY_TIMEOUT_MS / 1000);
			return -ETIMEDOUT;
		}
		k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			errorf("vcmad closed the connection without a response%s%s", k < 0 ? ": " : "",
			       k < 0 ? strerror(errno) : "");
			return -ECONNRESET;
		}
		c->len += (size_t)k;
	}
}

/*
 * Send {"version":1,"id":N,"cmd":cmd,...args} and return the result object (owned),
 * or NULL with the reason printed. args is consumed.
 */
static struct json_object *call(struct ctx *c, const char *cmd, struct json_object *args)
{
	struct json_object *req = args ? args : json_object_new_object(), *rsp, *res, *err;
	enum json_tokener_error jerr;
	int64_t id = ++c->next_id;
	const char *s;
	ssize_t n;
	size_t len;
	int rc;

	if (!req || ctx_connect(c)) {
		json_object_put(req);
		return NULL;
	}
	json_object_object_add(req, "version", json_object_new_int(VCMAD_CTL_VERSION));
	json_object_object_add(req, "id", json_object_new_int64(id));
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	s = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &len);
	rc = s ? send_all(c->fd, s, len) : -ENOMEM;
	if (!rc)
		rc = send_all(c->fd, "\n", 1);
	json_object_put(req);
	/* a refused connection may be closed before the request is read: the refusal
	 * is still waiting to be read */
	if (rc && rc != -EPIPE && rc != -ECONNRESET) {
		errorf("sending to vcmad: %s", strerror(-rc));
		return NULL;
	}
	n = read_line(c);
	if (n < 0)
		return NULL;
	c->buf[n] = '\0';
	rsp = json_tokener_parse_verbose(c->buf, &jerr);
	if (!rsp || !json_object_is_type(rsp, json_type_object) || ju64(rsp, "version") != VCMAD_CTL_VERSION) {
		errorf("vcmad sent an unreadable response%s%s", rsp ? "" : ": ",
		       rsp ? "" : json_tokener_error_desc(jerr));
		json_object_put(rsp);
		return NULL;
	}
	if (!jbool(rsp, "ok")) {
		err = jget(rsp, "error");
		errorf("%s (%s)", *jstr(err, "message") ? jstr(err, "message") : "request failed",
		       *jstr(err, "code") ? jstr(err, "code") : "EUNKNOWN");
		json_object_put(rsp);
		return NULL;
	}
	if (!jnull(rsp, "id") && (int64_t)ju64(rsp, "id") != id) {
		errorf("vcmad answered request %lld, expected %lld", (long long)ju64(rsp, "id"), (long long)id);
		json_object_put(rsp);
		return NULL;
	}
	res = json_object_get(jget(rsp, "result"));
	json_object_put(rsp);
	if (!res)
		errorf("vcmad sent no result");
	return res;
}

static void print_json(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* call(), and with --json print the result as it is: NULL then, and *rc says how it went. */
static struct json_object *call_for_table(struct ctx *c, const char *cmd, struct json_object *args, int *rc)
{
	struct json_object *r = call(c, cmd, args);

	*rc = r ? VCMACTL_OK : VCMACTL_FAILED;
	if (r && c->json) {
		print_json(r);
		json_object_put(r);
		return NULL;
	}
	return r;
}

/* ---- argument parsing ---- */

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return !errno && !*end;
}

static struct json_object *guest_arg(const char *s)
{
	uint64_t id;

	if (parse_u64(s, &id) && id <= UINT32_MAX && s[0] >= '0' && s[0] <= '9')
		return json_object_new_int64((int64_t)id);
	return json_object_new_string(s);
}

/* ---- commands ---- */

struct cmd {
	const char *name;
	const char *synopsis; /* after the name */
	const char *summary;
	const char *help;     /* options and details for COMMAND --help */
	int (*run)(struct ctx *c, int argc, char **argv);
	const char *shortopts;
	const struct option *longopts;
};

static const struct cmd *current;

static void cmd_usage(FILE *f)
{
	fprintf(f, "Usage: vcmactl [OPTION]... %s%s%s\n%c%s.\n%s", current->name, *current->synopsis ? " " : "",
		current->synopsis, toupper((unsigned char)current->summary[0]), current->summary + 1, current->help);
	fputs("\nCommon options: -j, --json  -s, --socket PATH  -h, --help (see vcmactl --help)\n", f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vcmactl: %s: ", current->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'vcmactl %s --help'.\n", current->name);
	return VCMACTL_USAGE;
}

/*
 * getopt_long over a command's own options plus the common ones. Returns the option
 * character, -1 at the end, or -2 after it handled --help / an error (*rc set).
 */
static int next_opt(struct ctx *c, int argc, char **argv, int *rc)
{
	static struct option all[16]; /* one command runs per process: built once */
	char shortopts[32];
	size_t n = 0;
	int o;

	if (!all[0].name) {
		all[n++] = (struct option){ "json", no_argument, NULL, 'j' };
		all[n++] = (struct option){ "socket", required_argument, NULL, 's' };
		all[n++] = (struct option){ "help", no_argument, NULL, 'h' };
		for (const struct option *lo = current->longopts; lo && lo->name && n + 1 < 16; lo++)
			all[n++] = *lo;
	}
	/* options may follow the positional arguments: GNU getopt permutes them */
	snprintf(shortopts, sizeof(shortopts), ":js:h%s", current->shortopts ? current->shortopts : "");
	o = getopt_long(argc, argv, shortopts, all, NULL);
	switch (o) {
	case 'j': c->json = true; return next_opt(c, argc, argv, rc);
	case 's': c->socket = optarg; return next_opt(c, argc, argv, rc);
	case 'h':
		cmd_usage(stdout);
		*rc = VCMACTL_OK;
		return -2;
	case '?':
		*rc = usage_error("unknown option '%s'", argv[optind - 1]);
		return -2;
	case ':':
		*rc = usage_error("option '%s' needs an argument", argv[optind - 1]);
		return -2;
	default: return o;
	}
}

/* For commands without options of their own: common options, then positionals. */
static int plain_opts(struct ctx *c, int argc, char **argv, int *rc, int min_pos, int max_pos)
{
	int o = next_opt(c, argc, argv, rc);

	if (o == -2)
		return -1;
	if (o != -1) {
		*rc = usage_error("unknown option '%s'", argv[optind - 1]);
		return -1;
	}
	if (argc - optind < min_pos || argc - optind > max_pos) {
		*rc = usage_error(argc - optind < min_pos ? "missing argument" : "unexpected argument '%s'",
				  argv[argc - 1]);
		return -1;
	}
	return 0;
}

static int run_status(struct ctx *c, int argc, char **argv)
{
	struct json_object *r;
	char a[32], b[32];
	int rc;

	if (plain_opts(c, argc, argv, &rc, 0, 0))
		return rc;
	r = call(c, "status", NULL);
	if (!r)
		return VCMACTL_FAILED;
	if (c->json) {
		print_json(r);
	} else {
		printf("vcmad %s (pid %llu), up %s\n", jstr(r, "version"), (unsigned long long)ju64(r, "pid"),
		       fmt_uptime(ju64(r, "uptime_ns"), a, sizeof(a)));
		printf("backend     %s, %s machine memory\n", jstr(r, "backend"),
		       fmt_bytes(ju64(r, "machine_bytes"), a, sizeof(a)));
		printf("sockets     %s\n", jstr(r, "runtime_dir"));
		printf("pools       %llu\n", (unsigned long long)ju64(r, "pools"));
		printf("guests      %llu of at most %llu\n", (unsigned long long)ju64(r, "guests"),
		       (unsigned long long)ju64(r, "max_guests"));
		printf("regions     %llu, %s\n", (unsigned long long)ju64(r, "regions"),
		       fmt_bytes(ju64(r, "region_bytes"), b, sizeof(b)));
		printf("attaches    %llu, detaches %llu, violations %llu, attaches refused %llu\n",
		       (unsigned long long)ju64(r, "attaches"), (unsigned long long)ju64(r, "detaches"),
		       (unsigned long long)ju64(r, "violations"), (unsigned long long)ju64(r, "attach_refused"));
	}
	json_object_put(r);
	return VCMACTL_OK;
}

static uint64_t frames_bytes(struct json_object *p, const char *state)
{
	return ju64(jget(p, "frames"), state) * ju64(p, "frame_bytes");
}

static void pools_table(struct json_object *r, FILE *f)
{
	static const char *const head[] = { "POOL",	"MODE",	   "BIND",  "LEND",  "SIZE",   "FREE",
					    "LENT",	"REGION",  "LARGEST FREE",	"REGIONS", "QUOTA", "BASE" };
	struct json_object *pools = jget(r, "pools");
	size_t n = pools ? json_object_array_length(pools) : 0;
	struct table t;
	char b[32];

	table_init(&t, 12, head, "llllrrrrrrrl");
	for (size_t i = 0; i < n; i++) {
		struct json_object *p = json_object_array_get_idx(pools, i);

		table_cell(&t, "%s", jstr(p, "name"));
		table_cell(&t, "%s", jstr(p, "mode"));
		table_cell(&t, "%s", jnull(p, "bind") ? "-" : jstr(p, "bind"));
		table_cell(&t, "%s", jbool(p, "lendable") ? "yes" : "no");
		table_cell(&t, "%s", fmt_bytes(ju64(p, "size_bytes"), b, sizeof(b)));
		table_cell(&t, "%s", fmt_bytes(frames_bytes(p, "free"), b, sizeof(b)));
		table_cell(&t, "%s", fmt_bytes(frames_bytes(p, "lent_free") + frames_bytes(p, "lent_used"), b, sizeof(b)));
		table_cell(&t, "%s", fmt_bytes(frames_bytes(p, "region"), b, sizeof(b)));
		table_cell(&t, "%s", fmt_bytes(ju64(p, "largest_free_run_bytes"), b, sizeof(b)));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "regions"));
		table_cell(&t, "%s", jnull(p, "quota_bytes") ? "none" : fmt_bytes(ju64(p, "quota_bytes"), b, sizeof(b)));
		if (jnull(p, "base"))
			table_cell(&t, "held by %s", jstr(p, "held_by"));
		else
			table_cell(&t, "%s", fmt_hex(ju64(p, "base"), b, sizeof(b)));
	}
	table_print(&t, f, "");
}

static int run_pools(struct ctx *c, int argc, char **argv)
{
	struct json_object *r;
	int rc;

	if (plain_opts(c, argc, argv, &rc, 0, 0))
		return rc;
	r = call(c, "pools", NULL);
	if (!r)
		return VCMACTL_FAILED;
	if (c->json)
		print_json(r);
	else
		pools_table(r, stdout);
	json_object_put(r);
	return VCMACTL_OK;
}

static void pool_summary(struct json_object *p, FILE *f)
{
	struct json_object *fr = jget(p, "frames");
	char a[32], b[48], h[32], q[32];

	if (jnull(p, "base"))
		snprintf(b, sizeof(b), "held by %s", jstr(p, "held_by"));
	else
		snprintf(b, sizeof(b), "at %s", fmt_hex(ju64(p, "base"), h, sizeof(h)));
	fprintf(f, "pool %s: %s%s%s, %s, %s %s, quota %s per guest\n", jstr(p, "name"), jstr(p, "mode"),
		jnull(p, "bind") ? "" : " to ", jnull(p, "bind") ? "" : jstr(p, "bind"),
		jbool(p, "lendable") ? "lendable" : "not lendable", fmt_bytes(ju64(p, "size_bytes"), a, sizeof(a)), b,
		jnull(p, "quota_bytes") ? "none" : fmt_bytes(ju64(p, "quota_bytes"), q, sizeof(q)));
	fprintf(f, "frames: %llu total, %llu free, %llu lent (%llu free, %llu used), %llu region, %llu reserved, "
		   "%llu being vacated; %llu region(s)\n",
		(unsigned long long)ju64(fr, "total"), (unsigned long long)ju64(fr, "free"),
		(unsigned long long)(ju64(fr, "lent_free") + ju64(fr, "lent_used")),
		(unsigned long long)ju64(fr, "lent_free"), (unsigned long long)ju64(fr, "lent_used"),
		(unsigned long long)ju64(fr, "region"), (unsigned long long)ju64(fr, "reserved"),
		(unsigned long long)ju64(fr, "claimed"), (unsigned long long)ju64(p, "regions"));
	if (ju64(fr, "quarantined"))
		fprintf(f, "kept out of allocations: %llu lent frame(s) of unresponsive VMs (vcmactl guests)\n",
			(unsigned long long)ju64(fr, "quarantined"));
	fprintf(f, "largest free run: %s (%llu frames)\n", fmt_bytes(ju64(p, "largest_free_run_bytes"), a, sizeof(a)),
		(unsigned long long)ju64(p, "largest_free_run_frames"));
}

static int run_pool(struct ctx *c, int argc, char **argv)
{
	struct json_object *args, *r, *map, *usage;
	uint64_t width = MAP_WIDTH;
	char a[32];
	int o, rc;

	while ((o = next_opt(c, argc, argv, &rc)) != -1) {
		if (o == -2)
			return rc;
		if (o == 'w' && (!parse_u64(optarg, &width) || !width || width > VCMAD_CTL_MAP_WIDTH_MAX))
			return usage_error("--width: expected 1 to %u characters, got '%s'", VCMAD_CTL_MAP_WIDTH_MAX,
					   optarg);
	}
	if (optind >= argc)
		return usage_error("missing subcommand: vcmactl pool show NAME");
	if (strcmp(argv[optind], "show"))
		return usage_error("unknown subcommand '%s' (expected: show NAME)", argv[optind]);
	optind++;
	if (argc - optind != 1)
		return usage_error(optind >= argc ? "missing pool name" : "unexpected argument '%s'", argv[argc - 1]);
	args = json_object_new_object();
	if (!args)
		return VCMACTL_FAILED;
	json_object_object_add(args, "pool", json_object_new_string(argv[optind]));
	json_object_object_add(args, "width", json_object_new_int64((int64_t)width));
	r = call_for_table(c, "pool", args, &rc);
	if (!r)
		return rc;
	map = jget(r, "map");
	pool_summary(r, stdout);
	printf("\nmap: %llu characters, 1 character = %s (%llu frames)\n", (unsigned long long)ju64(map, "width"),
	       fmt_bytes(ju64(map, "bytes_per_char"), a, sizeof(a)), (unsigned long long)ju64(map, "frames_per_char"));
	print_map(stdout, jstr(map, "text"), ju64(r, "base"), ju64(map, "bytes_per_char"), term_columns());
	print_legend(stdout);
	usage = jget(r, "usage");
	if (usage && json_object_array_length(usage)) {
		static const char *const head[] = { "GUEST", "NAME", "REGIONS", "BYTES" };
		struct table t;

		table_init(&t, 4, head, "rlrr");
		for (size_t i = 0; i < json_object_array_length(usage); i++) {
			struct json_object *u = json_object_array_get_idx(usage, i);

			table_cell(&t, "%llu", (unsigned long long)ju64(u, "guest"));
			table_cell(&t, "%s", *jstr(u, "name") ? jstr(u, "name") : "?");
			table_cell(&t, "%llu", (unsigned long long)ju64(u, "regions"));
			table_cell(&t, "%s", fmt_bytes(ju64(u, "bytes"), a, sizeof(a)));
		}
		printf("\nusage by guest:\n");
		table_print(&t, stdout, "  ");
	} else {
		printf("\nusage by guest: none\n");
	}
	json_object_put(r);
	return VCMACTL_OK;
}

static int run_guests(struct ctx *c, int argc, char **argv)
{
	static const char *const head[] = { "ID",	"NAME",	    "CLASS",	  "ROLE",	"RAM",  "REGIONS",
					    "BYTES", "REQUESTS", "ALLOC OK", "ALLOC FAIL", "FREES" };
	struct json_object *r, *g;
	struct table t;
	char b[32];
	int rc;

	if (plain_opts(c, argc, argv, &rc, 0, 0))
		return rc;
	r = call_for_table(c, "guests", NULL, &rc);
	if (!r)
		return rc;
	g = jget(r, "guests");
	table_init(&t, 11, head, "rllllrrrrrr");
	for (size_t i = 0; g && i < json_object_array_length(g); i++) {
		struct json_object *e = json_object_array_get_idx(g, i);

		table_cell(&t, "%llu", (unsigned long long)ju64(e, "id"));
		table_cell(&t, "%s", jstr(e, "name"));
		table_cell(&t, "%s", *jstr(e, "class") ? jstr(e, "class") : "-");
		/* a VM that left PAUSEs unanswered is worth seeing at a glance */
		table_cell(&t, "%s%s%s", jstr(e, "role"), *jstr(e, "domain") ? " (libvirt)" : "",
			   jbool(e, "unresponsive") ? " (unresponsive)" : "");
		table_cell(&t, "%s", fmt_bytes(ju64(e, "ram_bytes"), b, sizeof(b)));
		table_cell(&t, "%llu", (unsigned long long)ju64(e, "regions"));
		table_cell(&t, "%s", fmt_bytes(ju64(e, "bytes"), b, sizeof(b)));
		table_cell(&t, "%llu", (unsigned long long)ju64(e, "requests"));
		table_cell(&t, "%llu", (unsigned long long)ju64(e, "alloc_ok"));
		table_cell(&t, "%llu", (unsigned long long)ju64(e, "alloc_fail"));
		table_cell(&t, "%llu", (unsigned long long)ju64(e, "frees"));
	}
	table_print(&t, stdout, "");
	printf("%zu guest(s)\n", g ? json_object_array_length(g) : 0);
	json_object_put(r);
	return VCMACTL_OK;
}

static const struct option regions_opts[] = {
	{ "guest", required_argument, NULL, 'g' },
	{ "pool", required_argument, NULL, 'p' },
	{ NULL, 0, NULL, 0 },
};

static int run_regions(struct ctx *c, int argc, char **argv)
{
	static const char *const head[] = { "HANDLE", "GUEST", "NAME", "POOL", "BUS", "GPA", "SIZE" };
	struct json_object *args = json_object_new_object(), *r, *regs;
	struct table t;
	char b[32];
	int o, rc;

	if (!args)
		return VCMACTL_FAILED;
	while ((o = next_opt(c, argc, argv, &rc)) != -1) {
		if (o == -2) {
			json_object_put(args);
			return rc;
		}
		if (o == 'g')
			json_object_object_add(args, "guest", guest_arg(optarg));
		if (o == 'p')
			json_object_object_add(args, "pool", json_object_new_string(optarg));
	}
	if (optind != argc) {
		json_object_put(args);
		return usage_error("unexpected argument '%s'", argv[optind]);
	}
	r = call_for_table(c, "regions", args, &rc);
	if (!r)
		return rc;
	regs = jget(r, "regions");
	table_init(&t, 7, head, "lrllllr");
	for (size_t i = 0; regs && i < json_object_array_length(regs); i++) {
		struct json_object *e = json_object_array_get_idx(regs, i);

		table_cell(&t, "%s", jstr(e, "handle"));
		table_cell(&t, "%llu", (unsigned long long)ju64(e, "guest"));
		table_cell(&t, "%s", *jstr(e, "guest_name") ? jstr(e, "guest_name") : "?");
		table_cell(&t, "%s", jstr(e, "pool"));
		table_cell(&t, "%s", fmt_hex(ju64(e, "bus"), b, sizeof(b)));
		table_cell(&t, "%s", ju64(e, "gpa") ? fmt_hex(ju64(e, "gpa"), b, sizeof(b)) : "-");
		table_cell(&t, "%s", fmt_bytes(ju64(e, "size_bytes"), b, sizeof(b)));
	}
	table_print(&t, stdout, "");
	printf("%llu region(s), %s\n", (unsigned long long)ju64(r, "count"), fmt_bytes(ju64(r, "bytes"), b, sizeof(b)));
	json_object_put(r);
	return VCMACTL_OK;
}

static const struct option alloc_opts[] = {
	{ "pool", required_argument, NULL, 'p' },
	{ "align", required_argument, NULL, 'a' },
	{ NULL, 0, NULL, 0 },
};

static int run_alloc(struct ctx *c, int argc, char **argv)
{
	struct json_object *args = json_object_new_object(), *r;
	const char *pool = NULL;
	uint64_t bytes, align = 0;
	char a[32], b[32];
	int o, rc;

	if (!args)
		return VCMACTL_FAILED;
	while ((o = next_opt(c, argc, argv, &rc)) != -1) {
		if (o == -2) {
			json_object_put(args);
			return rc;
		}
		if (o == 'p')
			pool = optarg;
		if (o == 'a' && (vcma_parse_bytes(optarg, &align) || align < 4096 || (align & (align - 1)))) {
			json_object_put(args);
			return usage_error("--align: expected a power of two of at least 4K, got '%s'", optarg);
		}
	}
	if (argc - optind != 1) {
		json_object_put(args);
		return usage_error(optind >= argc ? "missing SIZE" : "unexpected argument '%s'", argv[argc - 1]);
	}
	if (vcma_parse_bytes(argv[optind], &bytes) || !bytes) {
		json_object_put(args);
		return usage_error("SIZE: expected a size such as 2M, 512K or 1G, got '%s'", argv[optind]);
	}
	json_object_object_add(args, "bytes", json_object_new_uint64(bytes));
	if (pool)
		json_object_object_add(args, "pool", json_object_new_string(pool));
	if (align)
		json_object_object_add(args, "align", json_object_new_uint64(align));
	r = call(c, "alloc", args);
	if (!r)
		return VCMACTL_FAILED;
	if (c->json)
		print_json(r);
	else
		printf("allocated %s in pool %s: handle %s at bus address %s\n", fmt_bytes(ju64(r, "size_bytes"), a, sizeof(a)),
		       jstr(r, "pool"), jstr(r, "handle"), fmt_hex(ju64(r, "bus"), b, sizeof(b)));
	json_object_put(r);
	return VCMACTL_OK;
}

/* free and hash: one HANDLE, one request. Returns the result (NULL with *rc set). */
static struct json_object *call_with_handle(struct ctx *c, int argc, char **argv, const char *cmd, int *rc)
{
	struct json_object *args, *r;
	uint64_t h;
	char b[32];

	if (plain_opts(c, argc, argv, rc, 1, 1))
		return NULL;
	if (!parse_u64(argv[optind], &h) || !h) {
		*rc = usage_error("HANDLE: expected a region handle such as 0x100000001, got '%s'", argv[optind]);
		return NULL;
	}
	*rc = VCMACTL_FAILED;
	args = json_object_new_object();
	if (!args)
		return NULL;
	json_object_object_add(args, "handle", json_object_new_string(fmt_hex(h, b, sizeof(b))));
	r = call(c, cmd, args);
	if (r && c->json) {
		print_json(r);
		json_object_put(r);
		*rc = VCMACTL_OK;
		return NULL;
	}
	return r;
}

static int run_free(struct ctx *c, int argc, char **argv)
{
	struct json_object *r;
	int rc;

	r = call_with_handle(c, argc, argv, "free", &rc);
	if (!r)
		return rc;
	printf("freed region %s\n", jstr(r, "handle"));
	json_object_put(r);
	return VCMACTL_OK;
}

static int run_hash(struct ctx *c, int argc, char **argv)
{
	struct json_object *r;
	char b[32];
	int rc;

	r = call_with_handle(c, argc, argv, "hash", &rc);
	if (!r)
		return rc;
	printf("region %s (guest %llu, %s): fnv1a64 %s\n", jstr(r, "handle"), (unsigned long long)ju64(r, "guest"),
	       fmt_bytes(ju64(r, "size_bytes"), b, sizeof(b)), jstr(r, "fnv1a64"));
	json_object_put(r);
	return VCMACTL_OK;
}

static void vacate_report(struct json_object *r, const char *what)
{
	struct json_object *pools = jget(r, "pools");
	char a[32];

	for (size_t i = 0; pools && i < json_object_array_length(pools); i++) {
		struct json_object *p = json_object_array_get_idx(pools, i);

		printf("  %-12s %llu lent frame(s) found (%llu free, %llu used), %llu scheduled to move; largest free run %s\n",
		       jstr(p, "name"), (unsigned long long)(ju64(p, "lent_free") + ju64(p, "lent_used")),
		       (unsigned long long)ju64(p, "lent_free"), (unsigned long long)ju64(p, "lent_used"),
		       (unsigned long long)ju64(p, "scheduled"), fmt_bytes(ju64(p, "largest_free_run_bytes"), a, sizeof(a)));
	}
	printf("%s: %llu lent frame(s) found in %zu pool(s), %llu scheduled to move%s\n", what,
	       (unsigned long long)ju64(r, "lent_found"), pools ? json_object_array_length(pools) : 0,
	       (unsigned long long)ju64(r, "scheduled"),
	       ju64(r, "scheduled") ? " (in the background: see 'vcmactl pool show')" : "");
}

static int run_compact(struct ctx *c, int argc, char **argv)
{
	struct json_object *args = NULL, *r;
	int rc;

	if (plain_opts(c, argc, argv, &rc, 0, 1))
		return rc;
	if (optind < argc) {
		args = json_object_new_object();
		if (!args)
			return VCMACTL_FAILED;
		json_object_object_add(args, "pool", json_object_new_string(argv[optind]));
	}
	r = call(c, "compact", args);
	if (!r)
		return VCMACTL_FAILED;
	if (c->json)
		print_json(r);
	else
		vacate_report(r, "compact");
	json_object_put(r);
	return VCMACTL_OK;
}

static int run_drain(struct ctx *c, int argc, char **argv)
{
	struct json_object *args, *r;
	char what[96];
	int rc;

	if (plain_opts(c, argc, argv, &rc, 1, 1))
		return rc;
	args = json_object_new_object();
	if (!args)
		return VCMACTL_FAILED;
	json_object_object_add(args, "guest", guest_arg(argv[optind]));
	r = call(c, "drain", args);
	if (!r)
		return VCMACTL_FAILED;
	if (c->json) {
		print_json(r);
	} else {
		snprintf(what, sizeof(what), "drain %s (guest %llu)", jstr(r, "guest_name"),
			 (unsigned long long)ju64(r, "guest"));
		vacate_report(r, what);
	}
	json_object_put(r);
	return VCMACTL_OK;
}

static void print_hist(struct json_object *h, const char *what)
{
	struct json_object *b = jget(h, "buckets");
	uint64_t count = ju64(h, "count"), top = 0;
	char s1[32], s2[32], s3[32], s4[32];

	if (!count) {
		printf("  no %ss yet\n", what);
		return;
	}
	printf("  %llu %s(s): mean %s, p50 %s, p99 %s, max %s\n", (unsigned long long)count, what,
	       fmt_ns(ju64(h, "sum_ns") / count, s1, sizeof(s1)), fmt_ns(ju64(h, "p50_ns"), s2, sizeof(s2)),
	       fmt_ns(ju64(h, "p99_ns"), s3, sizeof(s3)), fmt_ns(ju64(h, "max_ns"), s4, sizeof(s4)));
	for (size_t i = 0; b && i < json_object_array_length(b); i++)
		if (ju64(json_object_array_get_idx(b, i), "count") > top)
			top = ju64(json_object_array_get_idx(b, i), "count");
	for (size_t i = 0; b && i < json_object_array_length(b); i++) {
		struct json_object *e = json_object_array_get_idx(b, i);
		uint64_t n = ju64(e, "count");
		int bar = (int)((n * 40 + top - 1) / top);

		if (!n)
			continue;
		if (jnull(e, "le_ns"))
			printf("    %12s  ", "> 549.8 s");
		else
			printf("    < %10s  ", fmt_ns(ju64(e, "le_ns"), s1, sizeof(s1)));
		printf("%.*s %llu\n", bar, "########################################", (unsigned long long)n);
	}
}

static const struct option stats_opts[] = {
	{ "prometheus", no_argument, NULL, 'P' },
	{ NULL, 0, NULL, 0 },
};

/* The Xen backend and balloon lending, when vcmad has them. */
static void print_xen_stats(struct json_object *x, struct json_object *b)
{
	char s1[32], s2[32], s3[32];

	if (x) {
		printf("\nxen: holder domain %llu holds %s, %s lent to balloons; regions %llu given (mean %.2f ms), "
		       "%llu taken back (mean %.2f ms), %llu moved by Xen; %s lost, %s zeroed in %.1f ms\n",
		       (unsigned long long)ju64(x, "holder_domid"), fmt_bytes(ju64(x, "held_bytes"), s1, sizeof(s1)),
		       fmt_bytes(ju64(x, "lent_bytes"), s2, sizeof(s2)), (unsigned long long)ju64(x, "regions_given"),
		       (double)ju64(x, "give_ns_mean") / 1e6, (unsigned long long)ju64(x, "regions_taken"),
		       (double)ju64(x, "take_ns_mean") / 1e6, (unsigned long long)ju64(x, "regions_moved"),
		       fmt_bytes(ju64(x, "lost_bytes"), s3, sizeof(s3)),
		       fmt_bytes(ju64(x, "zeroed_bytes"), s1, sizeof(s1)), (double)ju64(x, "zero_ns") / 1e6);
	}
	if (b) {
		struct json_object *ls = jget(b, "lenders");

		printf("balloon: %s lent now; %llu lend(s); %llu reclaim(s) took back %s (%llu short), mean %.1f ms, "
		       "max %.1f ms\n",
		       fmt_bytes(ju64(b, "lent_bytes"), s1, sizeof(s1)), (unsigned long long)ju64(b, "lends"),
		       (unsigned long long)ju64(b, "reclaims"), fmt_bytes(ju64(b, "reclaimed_bytes"), s2, sizeof(s2)),
		       (unsigned long long)ju64(b, "reclaims_short"), (double)ju64(b, "reclaim_ns_mean") / 1e6,
		       (double)ju64(b, "reclaim_ns_max") / 1e6);
		for (size_t i = 0; ls && i < json_object_array_length(ls); i++) {
			struct json_object *l = json_object_array_get_idx(ls, i);

			char s4[32], s5[32];

			printf("  lender %s (%s): %s lent%s; asked back %s, came back %s; %llu reclaim(s), %llu short, "
			       "max %.1f ms",
			       jstr(l, "name"), jstr(l, "kind"), fmt_bytes(ju64(l, "lent_bytes"), s3, sizeof(s3)),
			       jbool(l, "present") ? "" : " (not there now)", fmt_bytes(ju64(l, "asked_bytes"), s4, sizeof(s4)),
			       fmt_bytes(ju64(l, "came_back_bytes"), s5, sizeof(s5)), (unsigned long long)ju64(l, "reclaims"),
			       (unsigned long long)ju64(l, "reclaims_short"), (double)ju64(l, "reclaim_ns_max") / 1e6);
			if (jget(l, "plugged_bytes"))
				printf("; plugged %s of %s requested", fmt_bytes(ju64(l, "plugged_bytes"), s4, sizeof(s4)),
				       fmt_bytes(ju64(l, "requested_bytes"), s5, sizeof(s5)));
			printf("\n");
		}
	}
}

static int run_stats(struct ctx *c, int argc, char **argv)
{
	static const char *const head[] = { "POOL",	  "ALLOC OK",	  "ALLOC FAIL",	  "PAGES OK",
					    "PAGES FAIL", "PAGES FREED", "VACATED FREE", "VACATED USED" };
	struct json_object *r, *pools, *dm, *ctl;
	bool prom = false;
	struct table t;
	char a[32];
	int o, rc;

	while ((o = next_opt(c, argc, argv, &rc)) != -1) {
		if (o == -2)
			return rc;
		if (o == 'P')
			prom = true;
	}
	if (optind != argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (prom && c->json)
		return usage_error("--prometheus and --json exclude each other");
	r = call_for_table(c, "stats", NULL, &rc);
	if (!r)
		return rc;
	if (prom) {
		print_prometheus(stdout, r);
		json_object_put(r);
		return VCMACTL_OK;
	}
	pools = jget(r, "pools");
	table_init(&t, 8, head, "lrrrrrrr");
	for (size_t i = 0; pools && i < json_object_array_length(pools); i++) {
		struct json_object *p = json_object_array_get_idx(pools, i);

		table_cell(&t, "%s", jstr(p, "name"));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "alloc_success"));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "alloc_fail"));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "alloc_pages_success"));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "alloc_pages_fail"));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "release_pages_success"));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "vacated_lent_free"));
		table_cell(&t, "%llu", (unsigned long long)ju64(p, "vacated_lent_used"));
	}
	table_print(&t, stdout, "");
	for (size_t i = 0; pools && i < json_object_array_length(pools); i++) {
		struct json_object *p = json_object_array_get_idx(pools, i);

		printf("\nallocation latency, pool %s:\n", jstr(p, "name"));
		print_hist(jget(p, "alloc_latency"), "allocation");
	}
	dm = jget(r, "daemon");
	printf("\nVM pauses to vacate (PAUSE to RESUME); vacate jobs %llu done, %llu failed:\n",
	       (unsigned long long)ju64(dm, "vacate_jobs_ok"), (unsigned long long)ju64(dm, "vacate_jobs_failed"));
	print_hist(jget(dm, "pause_latency"), "pause");
	printf("pre-copy: %llu batch(es), %llu page(s) copied while running, %llu copied again, %llu in the final pause, "
	       "%llu round(s), %llu fallback(s); %llu drop(s) of %llu reported page(s) without a pause; relend: %llu "
	       "copy slice(s), %llu batch(es) given up for another job\n",
	       (unsigned long long)ju64(dm, "precopy_batches"), (unsigned long long)ju64(dm, "precopy_pages"),
	       (unsigned long long)ju64(dm, "precopy_recopied"), (unsigned long long)ju64(dm, "precopy_final_pages"),
	       (unsigned long long)ju64(dm, "precopy_rounds"), (unsigned long long)ju64(dm, "precopy_fallbacks"),
	       (unsigned long long)ju64(dm, "drops"), (unsigned long long)ju64(dm, "dropped_pages"),
	       (unsigned long long)ju64(dm, "copy_slices"), (unsigned long long)ju64(dm, "relend_gave_way"));
	printf("\nloop turns (from finding work to the turn's end: what a request arriving then waited):\n");
	print_hist(jget(dm, "loop_turn"), "loop turn");
	printf("\nguests that went away holding regions or RAM: %llu reclaimed (%llu region(s), %llu RAM frame(s)), "
	       "the last in %.3f ms; zeroing after: %llu frame(s) done, %llu pending, %llu error(s)\n",
	       (unsigned long long)ju64(dm, "reclaims"), (unsigned long long)ju64(dm, "reclaimed_regions"),
	       (unsigned long long)ju64(dm, "reclaimed_ram_frames"), (double)ju64(dm, "reclaim_last_ns") / 1e6,
	       (unsigned long long)ju64(dm, "scrubbed_frames"), (unsigned long long)ju64(dm, "scrub_pending_frames"),
	       (unsigned long long)ju64(dm, "scrub_errors"));
	print_hist(jget(dm, "reclaim_latency"), "reclaim");
	if (ju64(dm, "restored_guests"))
		printf("taken back at start: %llu guest(s), %llu region(s), %llu VM(s); %llu reattached, %llu reclaimed, "
		       "%llu waiting (%llu VM(s): nothing is handed out until they are back or reclaimed)\n",
		       (unsigned long long)ju64(dm, "restored_guests"), (unsigned long long)ju64(dm, "restored_regions"),
		       (unsigned long long)ju64(dm, "restored_vms"), (unsigned long long)ju64(dm, "restore_back"),
		       (unsigned long long)ju64(dm, "restore_reclaimed"), (unsigned long long)ju64(dm, "restore_waiting"),
		       (unsigned long long)ju64(dm, "restore_vms_waiting"));
	ctl = jget(dm, "ctl");
	printf("\ndaemon: up %s, %llu guest(s), %llu region(s); %llu attaches, %llu detaches, %llu violations, "
	       "%llu attaches refused\n",
	       fmt_uptime(ju64(dm, "uptime_ns"), a, sizeof(a)), (unsigned long long)ju64(dm, "guests"),
	       (unsigned long long)ju64(dm, "regions"), (unsigned long long)ju64(dm, "attaches"),
	       (unsigned long long)ju64(dm, "detaches"), (unsigned long long)ju64(dm, "violations"),
	       (unsigned long long)ju64(dm, "attach_refused"));
	printf("FREEs guests published without a kick (PROTOCOL.md 4.9): %llu turn(s) taken before another requester, "
	       "%llu when the window ended\n",
	       (unsigned long long)ju64(dm, "lazy_takes_early"), (unsigned long long)ju64(dm, "lazy_takes_closed"));
	printf("control socket: %llu client(s); %llu request(s), %llu error(s), %llu refused, %llu dropped\n",
	       (unsigned long long)ju64(ctl, "clients"), (unsigned long long)ju64(ctl, "requests"),
	       (unsigned long long)ju64(ctl, "errors"), (unsigned long long)ju64(ctl, "refused"),
	       (unsigned long long)ju64(ctl, "dropped"));
	print_xen_stats(jget(r, "xen"), jget(r, "balloon"));
	json_object_put(r);
	return VCMACTL_OK;
}

/* One picture of the pools: header, table, a map line per pool. */
static int watch_once(struct ctx *c, bool tty, unsigned int columns)
{
	struct json_object *st, *r, *pools;
	char a[32], b[32], when[32];
	time_t now = time(NULL);
	struct tm tm;

	st = call(c, "status", NULL);
	if (!st)
		return VCMACTL_FAILED;
	r = call(c, "pools", NULL);
	if (!r) {
		json_object_put(st);
		return VCMACTL_FAILED;
	}
	if (c->json) {
		print_json(r);
		goto out;
	}
	strftime(when, sizeof(when), "%H:%M:%S", localtime_r(&now, &tm));
	if (tty)
		fputs("\033[H\033[2J", stdout);
	printf("vcmad %s, up %s: %llu guest(s), %llu region(s), %s in regions    %s\n\n", jstr(st, "version"),
	       fmt_uptime(ju64(st, "uptime_ns"), a, sizeof(a)), (unsigned long long)ju64(st, "guests"),
	       (unsigned long long)ju64(st, "regions"), fmt_bytes(ju64(st, "region_bytes"), b, sizeof(b)), when);
	pools_table(r, stdout);
	pools = jget(r, "pools");
	putchar('\n');
	for (size_t i = 0; pools && i < json_object_array_length(pools); i++) {
		struct json_object *p = json_object_array_get_idx(pools, i), *args = json_object_new_object(), *m;
		unsigned int w = columns > 24 ? columns - 16 : 8;

		if (!args)
			break;
		json_object_object_add(args, "pool", json_object_new_string(jstr(p, "name")));
		json_object_object_add(args, "width", json_object_new_int64(w > VCMAD_CTL_MAP_WIDTH_MAX ? VCMAD_CTL_MAP_WIDTH_MAX : w));
		m = call(c, "pool", args);
		if (!m) {
			json_object_put(st);
			json_object_put(r);
			return VCMACTL_FAILED;
		}
		printf("%-12.12s  %s\n", jstr(p, "name"), jstr(jget(m, "map"), "text"));
		json_object_put(m);
	}
	print_legend(stdout);
out:
	fflush(stdout);
	json_object_put(st);
	json_object_put(r);
	return VCMACTL_OK;
}

static const struct option watch_opts[] = {
	{ "interval", required_argument, NULL, 'i' },
	{ "count", required_argument, NULL, 'n' },
	{ NULL, 0, NULL, 0 },
};

static int run_watch(struct ctx *c, int argc, char **argv)
{
	double interval = 1.0;
	uint64_t count = 0;
	bool tty = isatty(STDOUT_FILENO);
	int o, rc;

	while ((o = next_opt(c, argc, argv, &rc)) != -1) {
		char *end;

		if (o == -2)
			return rc;
		if (o == 'i') {
			errno = 0;
			interval = strtod(optarg, &end);
			if (errno || *end || end == optarg || !(interval >= 0.05 && interval <= 3600))
				return usage_error("--interval: expected seconds from 0.05 to 3600, got '%s'", optarg);
		}
		if (o == 'n' && (!parse_u64(optarg, &count) || !count))
			return usage_error("--count: expected a positive number, got '%s'", optarg);
	}
	if (optind != argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	for (uint64_t i = 0; !count || i < count; i++) {
		struct timespec ts = { .tv_sec = (time_t)interval,
				       .tv_nsec = (long)((interval - (double)(time_t)interval) * 1e9) };

		if (i && !tty && !c->json)
			putchar('\n');
		rc = watch_once(c, tty, term_columns());
		if (rc)
			return rc;
		if (count && i + 1 == count)
			break;
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	return VCMACTL_OK;
}

static const struct option attach_opts[] = {
	{ "xen", required_argument, NULL, 'x' },
	{ "class", required_argument, NULL, 'c' },
	{ NULL, 0, NULL, 0 },
};

/* attach DOMAIN [--class C] / detach DOMAIN: a libvirt domain's vcma metadata and
 * ivshmem device; attach --xen DOMAIN / detach --xen DOMAIN: a Xen domain's vcma device. */
static int run_attach_detach(struct ctx *c, int argc, char **argv, bool attach)
{
	struct json_object *args, *r;
	const char *xen = NULL, *dom = NULL, *cls = NULL;
	int o, rc = VCMACTL_OK;

	while ((o = next_opt(c, argc, argv, &rc)) != -1) {
		if (o == -2)
			return rc;
		if (o == 'x')
			xen = optarg;
		else if (o == 'c' && attach)
			cls = optarg;
		else
			return usage_error("unknown option '%s'", argv[optind - 1]);
	}
	if (optind < argc)
		dom = argv[optind++];
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (xen && (dom || cls))
		return usage_error("--xen DOMAIN takes no other domain or --class (a Xen domain's class is its "
				   "[guest] section's)");
	if (!xen && !dom)
		return usage_error("missing DOMAIN (a libvirt domain name; --xen DOMAIN for a Xen domain)");
	args = json_object_new_object();
	if (!args)
		return VCMACTL_FAILED;
	json_object_object_add(args, "domain", json_object_new_string(xen ? xen : dom));
	if (cls)
		json_object_object_add(args, "class", json_object_new_string(cls));
	r = call(c, xen ? (attach ? "xen-attach" : "xen-detach") : (attach ? "attach" : "detach"), args);
	if (!r)
		return VCMACTL_FAILED;
	if (c->json)
		print_json(r);
	else if (xen && attach)
		printf("domain %llu (%s): vcma device %llu made; its vcma.ko connects now\n",
		       (unsigned long long)ju64(r, "domid"), xen, (unsigned long long)ju64(r, "devid"));
	else if (xen)
		printf("domain %llu (%s): vcma device closed and removed\n", (unsigned long long)ju64(r, "domid"), xen);
	else if (attach)
		printf("domain %s: vcma metadata set and ivshmem device added (server %s); its vcma.ko connects "
		       "when the device appears\n", dom, jstr(r, "socket"));
	else
		printf("domain %s: ivshmem device and vcma metadata removed; its regions are freed\n", dom);
	json_object_put(r);
	return VCMACTL_OK;
}

static int run_attach(struct ctx *c, int argc, char **argv)
{
	return run_attach_detach(c, argc, argv, true);
}

static int run_detach(struct ctx *c, int argc, char **argv)
{
	return run_attach_detach(c, argc, argv, false);
}

/* domain define FILE | start|destroy|undefine NAME: libvirt domains through vcmad,
 * which is the only process that reaches them under an embed URI. */
static int run_domain(struct ctx *c, int argc, char **argv)
{
	struct json_object *args, *r;
	const char *act, *arg;
	int rc;

	if (plain_opts(c, argc, argv, &rc, 2, 2))
		return rc;
	act = argv[optind];
	arg = argv[optind + 1];
	if (strcmp(act, "define") && strcmp(act, "start") && strcmp(act, "destroy") && strcmp(act, "undefine"))
		return usage_error("unknown domain action '%s' (define FILE, start, destroy or undefine NAME)", act);
	args = json_object_new_object();
	if (!args)
		return VCMACTL_FAILED;
	json_object_object_add(args, "action", json_object_new_string(act));
	if (!strcmp(act, "define")) {
		FILE *f = fopen(arg, "re");
		char *buf = malloc(VCMAD_CTL_XML_MAX + 2);
		size_t n = 0;

		if (!f || !buf) {
			fprintf(stderr, "vcmactl: %s: %s\n", arg, strerror(errno));
			if (f)
				fclose(f);
			free(buf);
			json_object_put(args);
			return VCMACTL_FAILED;
		}
		n = fread(buf, 1, VCMAD_CTL_XML_MAX + 1, f);
		fclose(f);
		if (!n || n > VCMAD_CTL_XML_MAX) {
			fprintf(stderr, "vcmactl: %s: domain XML must be 1 to %u bytes\n", arg, VCMAD_CTL_XML_MAX);
			free(buf);
			json_object_put(args);
			return VCMACTL_FAILED;
		}
		buf[n] = '\0';
		json_object_object_add(args, "xml", json_object_new_string(buf));
		free(buf);
	} else {
		json_object_object_add(args, "domain", json_object_new_string(arg));
	}
	r = call(c, "domain", args);
	if (!r)
		return VCMACTL_FAILED;
	if (c->json)
		print_json(r);
	else
		printf("domain %s: %s done\n", jstr(r, "domain"), act);
	json_object_put(r);
	return VCMACTL_OK;
}

static const struct option pool_opts[] = {
	{ "width", required_argument, NULL, 'w' },
	{ NULL, 0, NULL, 0 },
};

/* vcmactl state verify DIR: no socket; the work is in vcmactl-state.c */
static int run_state(struct ctx *c, int argc, char **argv)
{
	int rc;

	if (plain_opts(c, argc, argv, &rc, 0, 2))
		return rc;
	if (argc - optind < 1)
		return usage_error("missing subcommand: vcmactl state verify|show DIR");
	if (strcmp(argv[optind], "verify") && strcmp(argv[optind], "show"))
		return usage_error("unknown subcommand '%s' (expected: verify DIR or show DIR)", argv[optind]);
	if (argc - optind < 2)
		return usage_error("missing DIR (vcmad's state directory, e.g. /var/lib/vcma)");
	if (argc - optind > 2)
		return usage_error("unexpected argument '%s'", argv[optind + 2]);
	if (!strcmp(argv[optind], "show"))
		return vcmactl_state_show(argv[optind + 1], c->json);
	return vcmactl_state_verify(argv[optind + 1], c->json);
}

static const struct cmd cmds[] = {
	{ "status", "", "vcmad's version, uptime, backend; counts of everything",
	  "", run_status, NULL, NULL },
	{ "pools", "", "every pool: mode, size, free/lent/region, largest run",
	  "", run_pools, NULL, NULL },
	{ "pool", "show NAME [--width N]",
	  "one pool: counts, fragmentation map, usage by guest",
	  "\n  -w, --width N   characters in the map, 1 to 1024 (default 256); each stands for an\n"
	  "                  equal block of the pool and is wrapped at the terminal width\n",
	  run_pool, "w:", pool_opts },
	{ "guests", "", "attached guests: RAM, regions, request counters", "",
	  run_guests, NULL, NULL },
	{ "regions", "[--guest ID|NAME] [--pool NAME]",
	  "live regions: handle, owner, pool, addresses, size",
	  "\n  -g, --guest ID|NAME   only regions of this guest (vcmactl or 0: test allocations)\n"
	  "  -p, --pool NAME       only regions in this pool\n",
	  run_regions, "g:p:", regions_opts },
	{ "alloc", "[--pool NAME] [--align SIZE] SIZE",
	  "allocate a test region owned by vcmactl (guest 0)",
	  "\n  -p, --pool NAME    pool to allocate from (default: the first shared pool)\n"
	  "  -a, --align SIZE   alignment, a power of two from 4K to 1G (default: natural)\n"
	  "SIZE takes K, M, G suffixes (binary). The region is zeroed, and freed by vcmactl free\n"
	  "or when vcmad stops.\n",
	  run_alloc, "p:a:", alloc_opts },
	{ "free", "HANDLE", "free a test region made by vcmactl alloc",
	  "\nHANDLE is the hex handle alloc printed. Guests' regions cannot be freed here.\n", run_free, NULL, NULL },
	{ "compact", "[POOL]", "move lent frames out of POOL (or of every pool)",
	  "\nEvery lent frame found is scheduled to move to ordinary memory; the moves finish in\n"
	  "the background. The pool is not lent again for 30 s, so the free runs are there for\n"
	  "the allocations ahead.\n",
	  run_compact, NULL, NULL },
	{ "drain", "GUEST", "move the frames lent to GUEST out of the pools",
	  "\nGUEST is an id or a name. Its pages on pool frames are scheduled to move to ordinary\n"
	  "memory, and it is not lent pool frames again.\n",
	  run_drain, NULL, NULL },
	{ "hash", "HANDLE", "FNV-1a hash of a region's bytes as vcmad sees them",
	  "\nHANDLE is any live region's handle (vcmactl regions lists them), a guest's too: the\n"
	  "hash lets a test check what a guest wrote. Regions up to 64 MiB.\n", run_hash, NULL, NULL },
	{ "attach", "DOMAIN [--class C] | --xen DOMAIN", "give a libvirt domain (or a Xen domain) its vcma device",
	  "\nDOMAIN is a libvirt domain (vcmad with [libvirt] uri): vcmad sets its vcma metadata and\n"
	  "adds an ivshmem-doorbell <shmem> device served by vcmad, live if the domain runs and in\n"
	  "its persistent definition; the domain's vcma.ko connects when the device appears.\n"
	  "  -c, --class C      the guest's device class (pool bindings)\n"
	  "  -x, --xen DOMAIN   a Xen domain name or id instead. vcmad writes the device's xenstore\n"
	  "                     nodes as a toolstack does; the domain's vcma.ko then connects.\n"
	  "                     Configured guests with attach = auto get theirs without this.\n",
	  run_attach, "x:c:", attach_opts },
	{ "detach", "DOMAIN | --xen DOMAIN", "take a domain's vcma device away",
	  "\nDOMAIN is a libvirt domain: its ivshmem device and vcma metadata are removed (live and\n"
	  "persistent), and its regions are freed.\n"
	  "  -x, --xen DOMAIN   a Xen domain name or id instead. Its regions are freed (the guest\n"
	  "                     sees its device go) and the device's nodes are removed.\n",
	  run_detach, "x:", attach_opts },
	{ "domain", "define FILE | start|destroy|undefine NAME", "manage a libvirt domain through vcmad",
	  "\nWith an embed URI ([libvirt] uri = qemu:///embed?root=...) vcmad holds the only\n"
	  "connection to its domains, so they are defined, started, destroyed and undefined here.\n"
	  "FILE is domain XML (at most 60000 bytes).\n",
	  run_domain, NULL, NULL },
	{ "stats", "[--prometheus]", "counters and allocation latency histograms",
	  "\n  -P, --prometheus   print Prometheus text exposition format instead\n", run_stats, "P", stats_opts },
	{ "state", "verify|show DIR", "check vcmad's state directory offline, or list what it records",
	  "\nDIR is vcmad's state directory (/var/lib/vcma by default). Needs no vcmad and changes\n"
	  "no record in DIR. Checks every record's CRC, says what start-up would do with a torn newest\n"
	  "transaction (drop it: printed as a warning), and the ownership invariants: every frame\n"
	  "owned at most once by regions and p2m runs, regions inside their pools, no gfn of a VM\n"
	  "backed twice, owners that are known guests. Prints the record counts and the last\n"
	  "transaction, then OK or each violation. Exit status 1 on corruption or any violation.\n"
	  "show lists the records: pools, guests (with their link and identity: uid, QEMU pid and\n"
	  "start time, Xen domid), regions, and each VM's p2m as frames and runs.\n",
	  run_state, NULL, NULL },
	{ "watch", "[--interval SECONDS] [--count N]", "redraw the pools and their maps until interrupted",
	  "\n  -i, --interval SECONDS   time between pictures (default 1, fractions allowed)\n"
	  "  -n, --count N            stop after N pictures\n"
	  "On a terminal the screen is cleared for each picture; otherwise pictures follow each\n"
	  "other separated by a blank line (with --json: one pools result per line).\n",
	  run_watch, "i:n:", watch_opts },
};

static void usage(FILE *f)
{
	fputs("Usage: vcmactl [OPTION]... COMMAND [ARG]...\n"
	      "Inspect and operate vcmad, the vcma host daemon, through its control socket.\n"
	      "\nCommands:\n",
	      f);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char left[64];

		snprintf(left, sizeof(left), "%s%s%s", cmds[i].name, *cmds[i].synopsis ? " " : "", cmds[i].synopsis);
		if (strlen(left) > 22)
			fprintf(f, "  %s\n  %-22s  %s\n", left, "", cmds[i].summary);
		else
			fprintf(f, "  %-22s  %s\n", left, cmds[i].summary);
	}
	fputs("\nOptions:\n"
	      "  -s, --socket PATH   vcmad's control socket (default $VCMA_CTL_SOCKET, else\n"
	      "                      " VCMAD_CTL_DEFAULT_SOCKET ")\n"
	      "  -j, --json          print each result as one JSON object per line\n"
	      "  -h, --help          show this help and exit; COMMAND --help shows a command's\n"
	      "  -V, --version       show the version and exit\n"
	      "\nExit status: 0 ok, 1 operation failed or vcmad unreachable, 2 usage error.\n"
	      "See vcmactl(1) and vcmad(8).\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctx c = { .fd = -1 };
	int o, rc;

	c.socket = getenv("VCMA_CTL_SOCKET");
	if (!c.socket || !*c.socket)
		c.socket = VCMAD_CTL_DEFAULT_SOCKET;
	while ((o = getopt_long(argc, argv, "+s:jhV", opts, NULL)) != -1) {
		switch (o) {
		case 's': c.socket = optarg; break;
		case 'j': c.json = true; break;
		case 'h': usage(stdout); return VCMACTL_OK;
		case 'V': printf("vcmactl %s (control protocol %d)\n", VCMA_VERSION, VCMAD_CTL_VERSION); return VCMACTL_OK;
		default: fputs("Try 'vcmactl --help'.\n", stderr); return VCMACTL_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return VCMACTL_USAGE;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(argv[optind], cmds[i].name))
			continue;
		current = &cmds[i];
		argc -= optind;
		argv += optind;
		optind = 0; /* glibc: restart getopt on the command's arguments */
		rc = current->run(&c, argc, argv);
		if (c.fd >= 0)
			close(c.fd);
		free(c.buf);
		if (fflush(stdout) || ferror(stdout)) {
			errorf("writing output: %s", strerror(errno));
			return VCMACTL_FAILED;
		}
		return rc;
	}
	errorf("unknown command '%s'", argv[optind]);
	fputs("Try 'vcmactl --help'.\n", stderr);
	return VCMACTL_USAGE;
}
