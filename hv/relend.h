/* SPDX-License-Identifier: MIT */
/*
 * relend.h - idle pool frames back to work: after relend_idle_ms without an ALLOC or
 * FREE, VMs' pages on ordinary memory move back onto idle frames of lendable pools
 * (from the top; regions pack toward the bottom), one vacate job at a time, which
 * gives way to any other job between batches. The timer sleeps until relending is
 * due; anything that frees pool frames or moves pages off them kicks it.
 */
#ifndef VCMA_HV_RELEND_H
#define VCMA_HV_RELEND_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

struct vcmad;

#define VCMAD_COMPACT_HOLD_NS (30ull * 1000000000ull) /* no relending of a pool after its compaction */
#define VCMAD_RELEND_MAX 8192u                        /* pages per relend job */

void vcmad_relend_init(struct vcmad *d);

/* An ALLOC or FREE was served: relending waits for relend_idle_ms of quiet. */
void vcmad_relend_busy(struct vcmad *d);

#endif
