// SPDX-License-Identifier: MIT
/*
 * vcmactl-output.c - how vcmactl shows things to a person (tables with units, the
 * fragmentation map) and to Prometheus (text exposition format 0.0.4).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ctl/ctl_proto.h"
#include "pool_config.h"
#include "stats.h"
#include "vcmactl.h"

/* ---- JSON accessors ---- */

struct json_object *jget(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

uint64_t ju64(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);

	return v && json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0 ? json_object_get_uint64(v)
											    : 0;
}

bool jbool(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);

	return v && json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

bool jnull(struct json_object *o, const char *key)
{
	return jget(o, key) == NULL;
}

/* ---- units ---- */

const char *fmt_bytes(uint64_t bytes, char *buf, size_t len)
{
	return vcma_format_bytes(bytes, buf, len);
}

const char *fmt_ns(uint64_t ns, char *buf, size_t len)
{
	if (ns < 1000)
		snprintf(buf, len, "%llu ns", (unsigned long long)ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.1f us", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, len, "%.1f ms", (double)ns / 1e6);
	else
		snprintf(buf, len, "%.2f s", (double)ns / 1e9);
	return buf;
}

const char *fmt_uptime(uint64_t ns, char *buf, size_t len)
{
	uint64_t s = ns / 1000000000ull;
	unsigned long long d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;

	if (d)
		snprintf(buf, len, "%llud %02lluh %02llum", d, h, m);
	else if (h)
		snprintf(buf, len, "%lluh %02llum %02llus", h, m, sec);
	else if (m)
		snprintf(buf, len, "%llum %02llus", m, sec);
	else
		snprintf(buf, len, "%llus", sec);
	return buf;
}

const char *fmt_hex(uint64_t v, char *buf, size_t len)
{
	snprintf(buf, len, "0x%llx", (unsigned long long)v);
	return buf;
}

unsigned int term_columns(void)
{
	struct winsize ws;
	const char *env = getenv("COLUMNS");
	long c;

	if (isatty(STDOUT_FILENO) && !ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) && ws.ws_col >= 20)
		return ws.ws_col;
	if (env && (c = strtol(env, NULL, 10)) >= 20 && c <= 10000)
		return (unsigned int)c;
	return 80;
}

/* ---- tables ---- */

void table_init(struct table *t, unsigned int ncols, const char *const *head, const char *align)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
	t->head = head;
	t->align = align;
}

void table_cell(struct table *t, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	if (t->ncells == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **p = realloc(t->cell, cap * sizeof(*p));

		if (!p)
			return; /* out of memory: the cell is left out */
		t->cell = p;
		t->cap = cap;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	t->cell[t->ncells++] = s;
}

void table_print(struct table *t, FILE *f, const char *indent)
{
	size_t w[32] = { 0 };
	unsigned int nc = t->ncols < 32 ? t->ncols : 32;

	for (unsigned int c = 0; c < nc; c++)
		w[c] = strlen(t->head[c]);
	for (size_t i = 0; i < t->ncells; i++)
		if (t->cell[i] && strlen(t->cell[i]) > w[i % t->ncols])
			w[i % t->ncols] = strlen(t->cell[i]);
	for (size_t row = 0; row <= (t->ncells + t->ncols - 1) / t->ncols; row++) {
		fputs(indent, f);
		for (unsigned int c = 0; c < nc; c++) {
			size_t i = (row - 1) * t->ncols + c;
			const char *s = !row ? t->head[c] : i < t->ncells && t->cell[i] ? t->cell[i] : "";
			bool last = c + 1 == nc;

			if (t->align[c] == 'r')
				fprintf(f, "%*s%s", (int)w[c], s, last ? "" : "  ");
			else
				fprintf(f, "%-*s%s", last ? 0 : (int)w[c], s, last ? "" : "  ");
		}
		fputc('\n', f);
	}
	for (size_t i = 0; i < t->ncells; i++)
		free(t->cell[i]);
	free(t->cell);
	memset(t, 0, sizeof(*t));
}

/* ---- the fragmentation map ---- */

void print_legend(FILE *f)
{
	fputs("legend:", f);
#define X(ch, text) fprintf(f, "  %c %s", ch, text);
	VCMAD_CTL_MAP_LEGEND
#undef X
	fputc('\n', f);
}

void print_map(FILE *f, const char *map, uint64_t base, uint64_t bytes_per_char, unsigned int columns)
{
	size_t n = strlen(map), row = 8;
	char addr[24];
	int aw;

	snprintf(addr, sizeof(addr), "0x%llx", (unsigned long long)(base + bytes_per_char * n));
	aw = (int)strlen(addr);
	while (row * 2 + (size_t)aw + 4 <= columns)
		row *= 2;
	for (size_t i = 0; i < n; i += row) {
		fmt_hex(base + bytes_per_char * i, addr, sizeof(addr));
		fprintf(f, "  %*s  %.*s\n", aw, addr, (int)(n - i < row ? n - i : row), map + i);
	}
}

/* ---- Prometheus ---- */

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped, as the format requires. */
static void label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

/* One sample; with pool, labelled pool="NAME" (and extra, which starts with a comma). */
static void pool_sample(FILE *f, const char *metric, struct json_object *pool, const char *extra, uint64_t v)
{
	if (!pool) {
		fprintf(f, "%s{%s} %llu\n", metric, extra ? extra + 1 : "", (unsigned long long)v);
		return;
	}
	fprintf(f, "%s{pool=\"", metric);
	label(f, jstr(pool, "name"));
	fprintf(f, "\"%s} %llu\n", extra ? extra : "", (unsigned long long)v);
}

/* A histogram from vcmad's JSON (buckets of le_ns) as cumulative Prometheus buckets. */
static void hist_samples(FILE *f, const char *metric, struct json_object *pool, struct json_object *h)
{
	struct json_object *b = jget(h, "buckets");
	size_t nb = b && json_object_is_type(b, json_type_array) ? json_object_array_length(b) : 0;
	uint64_t cum = 0;
	char name[96], extra[64];

	snprintf(name, sizeof(name), "%s_bucket", metric);
	for (size_t k = 0; k < nb; k++) {
		struct json_object *e = json_object_array_get_idx(b, k);

		cum += ju64(e, "count");
		if (jnull(e, "le_ns"))
			continue; /* the open-ended last bucket is +Inf below */
		snprintf(extra, sizeof(extra), ",le=\"%.12g\"", (double)ju64(e, "le_ns") / 1e9);
		pool_sample(f, name, pool, extra, cum);
	}
	pool_sample(f, name, pool, ",le=\"+Inf\"", ju64(h, "count"));
	if (pool) {
		fprintf(f, "%s_sum{pool=\"", metric);
		label(f, jstr(pool, "name"));
		fprintf(f, "\"} %.9f\n", (double)ju64(h, "sum_ns") / 1e9);
	} else {
		fprintf(f, "%s_sum %.9f\n", metric, (double)ju64(h, "sum_ns") / 1e9);
	}
	snprintf(name, sizeof(name), "%s_count", metric);
	if (pool)
		pool_sample(f, name, pool, NULL, ju64(h, "count"));
	else
		fprintf(f, "%s %llu\n", name, (unsigned long long)ju64(h, "count"));
}

/* Per lender (balloon.h): what it holds, what was asked back and what came back. */
static void lender_samples(FILE *f, struct json_object *ls)
{
	static const struct {
		const char *metric, *key, *type, *help;
		double scale;
	} lc[] = {
		{ "vcmad_lender_lent_bytes", "lent_bytes", "gauge", "Pool capacity lent to a lender now.", 1 },
		{ "vcmad_lender_asked_bytes_total", "asked_bytes", "counter", "Lent capacity asked back.", 1 },
		{ "vcmad_lender_came_back_bytes_total", "came_back_bytes", "counter",
		  "Lent capacity that came back in time.", 1 },
		{ "vcmad_lender_reclaims_total", "reclaims", "counter", "Take-backs from a lender.", 1 },
		{ "vcmad_lender_reclaims_short_total", "reclaims_short", "counter",
		  "Take-backs that ended short (the allocation was answered BUSY).", 1 },
		{ "vcmad_lender_reclaim_seconds_max", "reclaim_ns_max", "gauge", "Longest take-back.", 1e-9 },
		{ "vcmad_lender_reclaim_seconds_total", "reclaim_ns_total", "counter", "Time spent in take-backs.", 1e-9 },
		{ "vcmad_lender_plugged_bytes", "plugged_bytes", "gauge", "A virtio-mem lender's plugged size.", 1 },
	};
	size_t n = ls && json_object_is_type(ls, json_type_array) ? json_object_array_length(ls) : 0;

	if (!n)
		return;
	for (size_t c = 0; c < sizeof(lc) / sizeof(lc[0]); c++) {
		family(f, lc[c].metric, lc[c].type, lc[c].help);
		for (size_t i = 0; i < n; i++) {
			struct json_object *l = json_object_array_get_idx(ls, i);

			if (!jget(l, lc[c].key))
				continue;
			fprintf(f, "%s{lender=\"", lc[c].metric);
			label(f, jstr(l, "name"));
			fprintf(f, "\",kind=\"");
			label(f, jstr(l, "kind"));
			if (lc[c].scale == 1)
				fprintf(f, "\"} %llu\n", (unsigned long long)ju64(l, lc[c].key));
			else
				fprintf(f, "\"} %.6f\n", (double)ju64(l, lc[c].key) * lc[c].scale);
		}
	}
}

void print_prometheus(FILE *f, struct json_object *stats)
{
	static const struct {
		const char *key, *help;
	} counters[] = {
		{ "alloc_success", "Allocations that got a region." },
		{ "alloc_fail", "Allocations refused or failed." },
		{ "alloc_pages_success", "Frames handed out by successful allocations." },
		{ "alloc_pages_fail", "Frames asked for by failed allocations." },
		{ "release_pages_success", "Frames returned by frees." },
		{ "vacated_lent_free", "Lent frames taken back without a copy." },
		{ "vacated_lent_used", "Lent frames moved by copy and remap." },
	};
	static const char *const states[] = { "free", "lent_free", "lent_used", "region", "reserved", "claimed" };
	struct json_object *pools = jget(stats, "pools"), *dm = jget(stats, "daemon"), *ctl = jget(dm, "ctl");
	size_t np = pools && json_object_is_type(pools, json_type_array) ? json_object_array_length(pools) : 0;
	char name[96];

	for (size_t c = 0; c < sizeof(counters) / sizeof(counters[0]); c++) {
		snprintf(name, sizeof(name), "vcma_pool_%s_total", counters[c].key);
		family(f, name, "counter", counters[c].help);
		for (size_t i = 0; i < np; i++)
			pool_sample(f, name, json_object_array_get_idx(pools, i), NULL,
				    ju64(json_object_array_get_idx(pools, i), counters[c].key));
	}
	family(f, "vcma_pool_frames", "gauge", "Frames of a pool by state (4 KiB each).");
	for (size_t i = 0; i < np; i++)
		for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
			struct json_object *p = json_object_array_get_idx(pools, i);
			char extra[48];

			snprintf(extra, sizeof(extra), ",state=\"%s\"", states[s]);
			pool_sample(f, "vcma_pool_frames", p, extra, ju64(jget(p, "frames"), states[s]));
		}
	family(f, "vcma_pool_size_bytes", "gauge", "Size of a pool.");
	for (size_t i = 0; i < np; i++) {
		struct json_object *p = json_object_array_get_idx(pools, i);

		pool_sample(f, "vcma_pool_size_bytes", p, NULL, ju64(jget(p, "frames"), "total") * VCMA_PAGE_SIZE);
	}
	family(f, "vcma_pool_largest_free_run_bytes", "gauge", "Longest run of free frames in a pool.");
	for (size_t i = 0; i < np; i++)
		pool_sample(f, "vcma_pool_largest_free_run_bytes", json_object_array_get_idx(pools, i), NULL,
			    ju64(json_object_array_get_idx(pools, i), "largest_free_run_bytes"));
	family(f, "vcma_pool_regions", "gauge", "Live regions in a pool.");
	for (size_t i = 0; i < np; i++)
		pool_sample(f, "vcma_pool_regions", json_object_array_get_idx(pools, i), NULL,
			    ju64(json_object_array_get_idx(pools, i), "regions"));

	family(f, "vcma_alloc_latency_seconds", "histogram", "Time vcmad took to serve an allocation.");
	for (size_t i = 0; i < np; i++)
		hist_samples(f, "vcma_alloc_latency_seconds", json_object_array_get_idx(pools, i),
			     jget(json_object_array_get_idx(pools, i), "alloc_latency"));
	family(f, "vcmad_vacate_pause_seconds", "histogram",
	       "How long VMs stayed paused while vcmad moved their pages (PAUSE sent to RESUME sent).");
	hist_samples(f, "vcmad_vacate_pause_seconds", NULL, jget(dm, "pause_latency"));
	family(f, "vcmad_loop_turn_seconds", "histogram",
	       "How long each turn of vcmad's loop took (from finding work to the turn's end): what others waited.");
	hist_samples(f, "vcmad_loop_turn_seconds", NULL, jget(dm, "loop_turn"));
	family(f, "vcmad_reclaim_seconds", "histogram",
	       "How long vcmad took to free a departed guest's regions and RAM, from the loop turn that saw it go.");
	hist_samples(f, "vcmad_reclaim_seconds", NULL, jget(dm, "reclaim_latency"));
	family(f, "vcmad_scrub_pending_frames", "gauge", "Pool frames given back by departed guests not zeroed yet.");
	fprintf(f, "vcmad_scrub_pending_frames %llu\n", (unsigned long long)ju64(dm, "scrub_pending_frames"));

	family(f, "vcmad_uptime_seconds", "gauge", "Seconds since vcmad started serving.");
	fprintf(f, "vcmad_uptime_seconds %.3f\n", (double)ju64(dm, "uptime_ns") / 1e9);
	family(f, "vcmad_guests", "gauge", "Attached guests.");
	fprintf(f, "vcmad_guests %llu\n", (unsigned long long)ju64(dm, "guests"));
	family(f, "vcmad_regions", "gauge", "Live regions in all pools.");
	fprintf(f, "vcmad_regions %llu\n", (unsigned long long)ju64(dm, "regions"));
	static const struct {
		const char *metric, *key, *help;
		bool ctl;
	} dc[] = {
		{ "vcmad_attaches_total", "attaches", "Guests that attached.", false },
		{ "vcmad_detaches_total", "detaches", "Guests that detached or were cut off.", false },
		{ "vcmad_violations_total", "violations", "Guests cut off for breaking the protocol.", false },
		{ "vcmad_attach_refused_total", "attach_refused", "Attach requests refused.", false },
		{ "vcmad_reclaims_total", "reclaims", "Guests that went away holding regions or RAM, reclaimed.", false },
		{ "vcmad_reclaimed_regions_total", "reclaimed_regions", "Regions freed because their guest went away.",
		  false },
		{ "vcmad_reclaimed_ram_frames_total", "reclaimed_ram_frames", "RAM frames of departed VMs given back.",
		  false },
		{ "vcmad_scrubbed_frames_total", "scrubbed_frames", "Pool frames the scrubber zeroed after a guest went away.",
		  false },
		{ "vcmad_scrub_errors_total", "scrub_errors", "Zeroing by the scrubber that failed (left to the next owner).",
		  false },
		{ "vcmad_restored_guests_total", "restored_guests", "Guests taken back from the record at start.", false },
		{ "vcmad_restored_regions_total", "restored_regions", "Regions taken back from the record at start.", false },
		{ "vcmad_restored_vms_total", "restored_vms", "VMs whose RAM was taken back from the record at start.",
		  false },
		{ "vcmad_restore_back_total", "restore_back", "Guests taken back that reattached.", false },
		{ "vcmad_restore_reclaimed_total", "restore_reclaimed", "Guests taken back that did not come back, reclaimed.",
		  false },
		{ "vcmad_vacate_jobs_ok_total", "vacate_jobs_ok", "Vacate jobs (allocation, evict, relend) completed.", false },
		{ "vcmad_vacate_jobs_failed_total", "vacate_jobs_failed", "Vacate jobs that failed.", false },
		{ "vcmad_drops_total", "drops", "DROPs: reported pages moved without pausing their VM.", false },
		{ "vcmad_dropped_pages_total", "dropped_pages", "Reported pages moved without a pause.", false },
		{ "vcmad_precopy_batches_total", "precopy_batches", "Vacate batches pre-copied while their VM ran.", false },
		{ "vcmad_precopy_pages_total", "precopy_pages", "Pages copied while their VM ran.", false },
		{ "vcmad_precopy_recopied_total", "precopy_recopied", "Pre-copied pages copied again (written meanwhile).",
		  false },
		{ "vcmad_precopy_final_pages_total", "precopy_final_pages", "Pages copied inside the final pause of a "
		  "pre-copied batch.", false },
		{ "vcmad_precopy_fallbacks_total", "precopy_fallbacks", "Pre-copies that did not converge (paused in batches "
		  "instead).", false },
		{ "vcmad_copy_slices_total", "copy_slices", "Relend copies paused for a loop turn midway (slices).",
		  false },
		{ "vcmad_relend_gave_way_total", "relend_gave_way", "Relend batches given up between slices for another "
		  "job.", false },
		{ "vcmad_lazy_takes_early_total", "lazy_takes_early", "Turns for FREEs guests published without a kick, "
		  "taken before another requester was served (PROTOCOL.md 4.9).", false },
		{ "vcmad_lazy_takes_closed_total", "lazy_takes_closed", "Turns for FREEs guests published without a kick, "
		  "taken when their window ended.", false },
		{ "vcmad_state_commits_total", "state_commits", "Loop turns whose ownership changes were committed to the "
		  "state directory.", false },
		{ "vcmad_state_failures_total", "state_failures", "Turns whose commit failed (allocations refused until "
		  "the whole state is recorded again).", false },
		{ "vcmad_ctl_requests_total", "requests", "Control requests served.", true },
		{ "vcmad_ctl_errors_total", "errors", "Control requests answered with an error.", true },
		{ "vcmad_ctl_refused_total", "refused", "Control connections refused for their credentials.", true },
		{ "vcmad_ctl_dropped_total", "dropped", "Control clients dropped for not reading or a stalled request.",
		  true },
		{ "vcmad_ctl_evicted_total", "evicted", "Idle control clients closed to make room for a new one.", true },
	};
	for (size_t i = 0; i < sizeof(dc) / sizeof(dc[0]); i++) {
		family(f, dc[i].metric, "counter", dc[i].help);
		fprintf(f, "%s %llu\n", dc[i].metric, (unsigned long long)ju64(dc[i].ctl ? ctl : dm, dc[i].key));
	}
	lender_samples(f, jget(jget(stats, "balloon"), "lenders"));
}
