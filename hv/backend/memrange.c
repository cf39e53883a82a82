// SPDX-License-Identifier: MIT
/*
 * memrange.c - sorted free-extent list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend/memrange.h"

void vcma_memrange_init(struct vcma_memrange *m)
{
	memset(m, 0, sizeof(*m));
}

void vcma_memrange_fini(struct vcma_memrange *m)
{
	free(m->ext);
	memset(m, 0, sizeof(*m));
}

int vcma_memrange_free(struct vcma_memrange *m, uint64_t start, uint64_t count)
{
	uint32_t i = 0;

	if (!count || start + count < start)
		return -EINVAL;
	while (i < m->n && m->ext[i].start < start)
		i++;
	/* overlap with the previous or next extent means a double free */
	if (i > 0 && m->ext[i - 1].start + m->ext[i - 1].count > start)
		return -EEXIST;
	if (i < m->n && start + count > m->ext[i].start)
		return -EEXIST;
	m->free_frames += count;
	if (i > 0 && m->ext[i - 1].start + m->ext[i - 1].count == start) {
		m->ext[i - 1].count += count;
		if (i < m->n && m->ext[i - 1].start + m->ext[i - 1].count == m->ext[i].start) {
			m->ext[i - 1].count += m->ext[i].count;
			memmove(&m->ext[i], &m->ext[i + 1], (m->n - i - 1) * sizeof(*m->ext));
			m->n--;
		}
		return 0;
	}
	if (i < m->n && start + count == m->ext[i].start) {
		m->ext[i].start = start;
		m->ext[i].count += count;
		return 0;
	}
	if (m->n == m->cap) {
		uint32_t cap = m->cap ? m->cap * 2 : 16;
		struct vcma_extent *ne = realloc(m->ext, cap * sizeof(*ne));

		if (!ne) {
			m->free_frames -= count;
			return -ENOMEM;
		}
		m->ext = ne;
		m->cap = cap;
	}
	memmove(&m->ext[i + 1], &m->ext[i], (m->n - i) * sizeof(*m->ext));
	m->ext[i].start = start;
	m->ext[i].count = count;
	m->n++;
	return 0;
}

int vcma_memrange_alloc(struct vcma_memrange *m, uint64_t frames, struct vcma_extent *out, uint32_t max_runs)
{
	uint64_t need = frames;
	uint32_t runs = 0, i;

	if (!frames || frames > m->free_frames)
		return -ENOMEM;
	for (i = 0; i < m->n && need; i++) {
		uint64_t take = m->ext[i].count < need ? m->ext[i].count : need;

		if (runs == max_runs)
			return -ENOMEM;
		out[runs].start = m->ext[i].start;
		out[runs].count = take;
		runs++;
		need -= take;
	}
	if (need)
		return -ENOMEM;
	/* commit: whole extents vanish, the last one may shrink */
	for (uint32_t r = 0; r < runs; r++) {
		struct vcma_extent *e = &m->ext[0];

		if (out[r].count == e->count) {
			memmove(&m->ext[0], &m->ext[1], (m->n - 1) * sizeof(*m->ext));
			m->n--;
		} else {
			e->start += out[r].count;
			e->count -= out[r].count;
		}
	}
	m->free_frames -= frames;
	return (int)runs;
}

int vcma_memrange_take(struct vcma_memrange *m, uint64_t start, uint64_t count)
{
	uint32_t i = 0;
	struct vcma_extent *e;
	uint64_t end = start + count;

	if (!count || end < start)
		return -EINVAL;
	while (i < m->n && m->ext[i].start + m->ext[i].count <= start)
		i++;
	if (i == m->n || m->ext[i].start > start || m->ext[i].start + m->ext[i].count < end)
		return -ENOENT;
	e = &m->ext[i];
	if (e->start == start && e->count == count) {
		memmove(&m->ext[i], &m->ext[i + 1], (m->n - i - 1) * sizeof(*m->ext));
		m->n--;
	} else if (e->start == start) {
		e->start = end;
		e->count -= count;
	} else if (e->start + e->count == end) {
		e->count -= count;
	} else {
		/* split: [e->start, start) and [end, old end) */
		uint64_t old_end = e->start + e->count;

		if (m->n == m->cap) {
			uint32_t cap = m->cap ? m->cap * 2 : 16;
			struct vcma_extent *ne = realloc(m->ext, cap * sizeof(*ne));

			if (!ne)
				return -ENOMEM;
			m->ext = ne;
			m->cap = cap;
			e = &m->ext[i];
		}
		memmove(&m->ext[i + 2], &m->ext[i + 1], (m->n - i - 1) * sizeof(*m->ext));
		e->count = start - e->start;
		m->ext[i + 1].start = end;
		m->ext[i + 1].count = old_end - end;
		m->n++;
	}
	m->free_frames -= count;
	return 0;
}
