/* SPDX-License-Identifier: MIT */
/*
 * vcmactl.h - the parts of vcmactl shared between its files: JSON accessors and
 * human output (tables with units, the fragmentation map, Prometheus text).
 *
 *   vcmactl.c         command line, the connection to vcmad, one function per command
 *   vcmactl-output.c  tables, units, map wrapping, Prometheus exposition
 *   vcmactl-state.c   state verify: vcmad's state directory checked offline (hv/store)
 */
#ifndef VCMA_TOOLS_VCMACTL_H
#define VCMA_TOOLS_VCMACTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

/* Exit status, as vcmactl(1) documents. */
enum { VCMACTL_OK = 0, VCMACTL_FAILED = 1, VCMACTL_USAGE = 2 };

/* Members of a result object; missing members read as NULL / "" / 0. */
struct json_object *jget(struct json_object *o, const char *key);
const char *jstr(struct json_object *o, const char *key);
uint64_t ju64(struct json_object *o, const char *key);
bool jbool(struct json_object *o, const char *key);
bool jnull(struct json_object *o, const char *key); /* present and null, or missing */

/* Text of a value; each returns buf. */
const char *fmt_bytes(uint64_t bytes, char *buf, size_t len);  /* "2 MiB", "1.5 GiB" */
const char *fmt_ns(uint64_t ns, char *buf, size_t len);        /* "850 ns", "16.4 us", "2.1 ms" */
const char *fmt_uptime(uint64_t ns, char *buf, size_t len);    /* "3d 02h 10m", "5m 03s" */
const char *fmt_hex(uint64_t v, char *buf, size_t len);        /* "0x18000000" */

/* Columns of the terminal on stdout (or $COLUMNS, else 80). */
unsigned int term_columns(void);

/* An aligned table: headers, then rows of cells; printed with two spaces between
 * columns, numeric columns ('r' in align) right-aligned. */
struct table {
	unsigned int ncols;
	const char *const *head;
	const char *align;
	char **cell;
	size_t ncells, cap;
};
void table_init(struct table *t, unsigned int ncols, const char *const *head, const char *align);
void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void table_print(struct table *t, FILE *f, const char *indent); /* and free */

/* The pool fragmentation map: rows of a power-of-two width that fits `columns`, each
 * prefixed with the machine address of its first block, then the legend. */
void print_map(FILE *f, const char *map, uint64_t base, uint64_t bytes_per_char, unsigned int columns);
void print_legend(FILE *f);

/* vcmactl state verify DIR: prints the summary (or one JSON object) and each
 * violation; returns VCMACTL_OK, or VCMACTL_FAILED on corruption or violations. */
int vcmactl_state_verify(const char *dir, bool json);
int vcmactl_state_show(const char *dir, bool json);

/* The stats result as Prometheus text exposition (format 0.0.4). */
void print_prometheus(FILE *f, struct json_object *stats);

#endif
