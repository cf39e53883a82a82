/* SPDX-License-Identifier: MIT */
/*
 * evict.h - taking lent frames back without an allocation waiting for them: the
 * operator's compact (every lent frame of a pool) and drain (every frame lent to a
 * guest), and a VM's PIN (its pinned pages must leave pool frames). Each finds the
 * frames in scope and schedules their moves to ordinary memory as a vacate job
 * (vacate.h); the moves complete in the background.
 */
#ifndef VCMA_HV_EVICT_H
#define VCMA_HV_EVICT_H

#include <stdint.h>

#include "backend/backend.h"
#include "core.h"

struct vcmad;
struct vcmad_vm;

struct vcmad_vacate_pool {
	uint32_t pool;                 /* index in the core */
	uint64_t lent_free, lent_used; /* frames in scope found lent */
	uint64_t scheduled;            /* of those, scheduled to move out */
	uint64_t largest_free;         /* frames, when the request was answered */
};

struct vcmad_vacate_result {
	uint32_t npools;
	struct vcmad_vacate_pool pool[VCMA_MAX_POOLS];
	uint64_t lent_found, scheduled;
};

/* Compact one pool (name) or all (NULL): vacate every lent frame so free space joins
 * up; the pool is not relent for VCMAD_COMPACT_HOLD_NS. -ENOENT for an unknown pool,
 * -ENOMEM when ordinary memory cannot take a pool's pages (nothing scheduled there). */
int vcmad_compact(struct vcmad *d, const char *pool, struct vcmad_vacate_result *res);
/* Move the frames lent to guest `guest` out of every pool; it is lent no more. */
int vcmad_drain(struct vcmad *d, uint32_t guest, struct vcmad_vacate_result *res);
/* A VM pins pages: mark them, move those on pool frames off, then answer PINNED. */
void vcmad_pin(struct vcmad_vm *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n);

#endif
