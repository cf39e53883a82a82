/* SPDX-License-Identifier: MIT */
/*
 * restore.h - a restarted vcmad takes its guests back (issue 16; PROTOCOL.md §9.1
 * "Restart and reattach"; docs/ARCHITECTURE.md "Crash safety").
 *
 * At start, when the store holds a previous run's ownership and the machine memory it
 * describes was kept (durable.h), vcmad_restore():
 *   1. verifies the record (every frame owned at most once, every VM page backed once,
 *      regions inside their pools) and that the pools are where the record has them;
 *      a violation stops start-up, naming it;
 *   2. rebuilds every recorded guest as a *restored* guest on the restore link (no
 *      ring, no I/O): its regions in the core under their own handles and frames, a
 *      VM's RAM where its p2m says (pool frames lent, ordinary frames taken);
 *   3. zeroes every machine frame nobody owns (what was in flight when vcmad died:
 *      destinations of a vacate, freed regions whose zeroing never ran);
 *   4. waits: a sim guest comes back with REATTACH (link/sim.c calls
 *      vcmad_restore_take), a QEMU guest cannot and keeps its regions until its process
 *      exits (pid and start time from the record, watched with a pidfd); a guest not
 *      back within reattach_grace_ms is reclaimed as if it had detached.
 * Until every restored VM is back or reclaimed nothing is handed out
 * (vcmad_restore_holding): a VMM may have moved pages to frames the record does not
 * show as its own yet; the reattach adopts them (vm.h, vcmad_vm_adopt_p2m).
 */
#ifndef VCMA_HV_RESTORE_H
#define VCMA_HV_RESTORE_H

#include <stdbool.h>
#include <stdint.h>

struct vcmad;
struct vcmad_guest;
struct vcmad_link;

/* The state (struct vcmad_restore, d->restore) is vcmad.h's, as every part's is. */

/* Take back the previous run's guests, if the store holds them (else nothing): 0, or
 * -errno with the reason logged (vcmad does not start). */
int vcmad_restore(struct vcmad *d);
/* True while frames must not be handed out (restored VMs not back yet). */
bool vcmad_restore_holding(const struct vcmad *d);
/* Guest id restored and waiting, as the sim link sees it: NULL unless it is a sim guest
 * still waiting. Its token, role and RAM size are checked by the caller. */
struct vcmad_guest *vcmad_restore_find(struct vcmad *d, uint32_t id);
/* The guest of that name taken back and still waiting (a QEMU's, until it exits), or NULL. */
struct vcmad_guest *vcmad_restore_holding_name(struct vcmad *d, const char *name);
bool vcmad_restore_token_ok(const struct vcmad_guest *g, const uint8_t token[16]);
/* g is back on link l with link_priv priv: it leaves the restore link. */
void vcmad_restore_take(struct vcmad_guest *g, struct vcmad_link *l, void *priv);

#endif
