// SPDX-License-Identifier: MIT
/*
 * region.c - region handle table.
 *
 * handle = gen << 32 | slot. A slot's gen starts at 1 and is bumped when its region
 * is removed, so a handle matches only the occupant it was issued to.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "region.h"

#define NO_SLOT UINT32_MAX

int vcma_regions_init(struct vcma_regions *t, uint32_t max_slots)
{
	memset(t, 0, sizeof(*t));
	if (max_slots == 0 || max_slots == NO_SLOT)
		return -EINVAL;
	t->max_slots = max_slots;
	t->free_head = NO_SLOT;
	t->gen_floor = 1;
	return 0;
}

void vcma_regions_fini(struct vcma_regions *t)
{
	free(t->slot);
	memset(t, 0, sizeof(*t));
}

/* Make room for slots up to idx (exclusive of nothing: idx < max_slots). */
static int grow(struct vcma_regions *t, uint32_t need)
{
	if (need > t->max_slots)
		return -ENOSPC;
	if (need > t->cap) {
		uint32_t cap = t->cap ? t->cap : 64;
		struct vcma_region_slot *ns;

		while (cap < need)
			cap *= 2;
		if (cap > t->max_slots)
			cap = t->max_slots;
		ns = realloc(t->slot, (size_t)cap * sizeof(*ns));
		if (!ns)
			return -ENOMEM;
		t->slot = ns;
		t->cap = cap;
	}
	return 0;
}

static struct vcma_region_slot *slot_of(const struct vcma_regions *t, uint32_t guest, uint64_t handle)
{
	uint32_t slot = (uint32_t)handle, gen = (uint32_t)(handle >> 32);
	struct vcma_region_slot *s;

	if (slot >= t->nslots)
		return NULL;
	s = &t->slot[slot];
	if (!s->live || s->gen != gen || s->r.guest != guest)
		return NULL;
	return s;
}

/* The free list after restores: every free slot, lowest index first. */
static void rebuild_free(struct vcma_regions *t)
{
	t->free_head = NO_SLOT;
	for (uint32_t i = t->nslots; i-- > 0;)
		if (!t->slot[i].live) {
			t->slot[i].next_free = t->free_head;
			t->free_head = i;
		}
	t->free_stale = 0;
}

int vcma_regions_insert(struct vcma_regions *t, struct vcma_region *r)
{
	struct vcma_region_slot *s;
	uint32_t idx;

	if (t->free_stale)
		rebuild_free(t);
	if (t->free_head != NO_SLOT) {
		idx = t->free_head;
		t->free_head = t->slot[idx].next_free;
		if (t->slot[idx].gen < t->gen_floor)
			t->slot[idx].gen = t->gen_floor; /* above every handle issued before a restart */
	} else {
		int rc;

		if (t->nslots >= t->max_slots)
			return -ENOSPC;
		rc = grow(t, t->nslots + 1);
		if (rc)
			return rc;
		idx = t->nslots++;
		t->slot[idx].gen = t->gen_floor;
	}
	s = &t->slot[idx];
	s->live = 1;
	s->next_free = NO_SLOT;
	s->r = *r;
	s->r.handle = (uint64_t)s->gen << 32 | idx;
	r->handle = s->r.handle;
	if (s->gen > t->max_gen)
		t->max_gen = s->gen;
	t->nlive++;
	return 0;
}

int vcma_regions_insert_at(struct vcma_regions *t, const struct vcma_region *r)
{
	uint32_t idx = (uint32_t)r->handle, gen = (uint32_t)(r->handle >> 32);
	struct vcma_region_slot *s;
	int rc;

	if (!gen || idx == NO_SLOT)
		return -EINVAL;
	if (idx >= t->nslots) {
		rc = grow(t, idx + 1);
		if (rc)
			return rc;
		for (uint32_t i = t->nslots; i < idx + 1; i++) {
			t->slot[i].gen = t->gen_floor;
			t->slot[i].live = 0;
		}
		t->nslots = idx + 1;
	}
	s = &t->slot[idx];
	if (s->live)
		return -EEXIST;
	s->live = 1;
	s->gen = gen;
	s->next_free = NO_SLOT;
	s->r = *r;
	t->nlive++;
	if (gen >= t->gen_floor)
		t->gen_floor = gen == UINT32_MAX ? 1 : gen + 1;
	if (gen > t->max_gen)
		t->max_gen = gen;
	t->free_stale = 1; /* rebuilt by the next insert */
	return 0;
}

const struct vcma_region *vcma_regions_lookup(const struct vcma_regions *t, uint32_t guest, uint64_t handle)
{
	struct vcma_region_slot *s = slot_of(t, guest, handle);

	return s ? &s->r : NULL;
}

int vcma_regions_remove(struct vcma_regions *t, uint32_t guest, uint64_t handle, struct vcma_region *out)
{
	struct vcma_region_slot *s = slot_of(t, guest, handle);

	if (!s)
		return -ENOENT;
	if (out)
		*out = s->r;
	s->live = 0;
	/* gen 0 is never issued: skip it when the counter wraps */
	s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
	s->next_free = t->free_head;
	t->free_head = (uint32_t)(s - t->slot);
	t->nlive--;
	return 0;
}

int vcma_regions_set_gpa(struct vcma_regions *t, uint32_t guest, uint64_t handle, uint64_t gpa)
{
	struct vcma_region_slot *s = slot_of(t, guest, handle);

	if (!s)
		return -ENOENT;
	s->r.gpa = gpa;
	return 0;
}

const struct vcma_region *vcma_regions_next(const struct vcma_regions *t, uint32_t *cursor)
{
	while (*cursor < t->nslots) {
		const struct vcma_region_slot *s = &t->slot[(*cursor)++];

		if (s->live)
			return &s->r;
	}
	return NULL;
}
