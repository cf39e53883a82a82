// SPDX-License-Identifier: MIT
/*
 * restore.c - a restarted vcmad takes its guests back from the store (restore.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "durable.h"
#include "guest.h"
#include "log.h"
#include "relend.h"
#include "restore.h"
#include "scrub.h"
#include "store/store.h"
#include "vcmad.h"
#include "vm.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* A restored guest's link state, until it is back or reclaimed. */
struct restored {
	struct vcmad_guest *g;
	enum vcma_store_link kind;
	bool vm;   /* a VM: nothing is handed out until it is back or reclaimed */
	int pidfd; /* QEMU: its process, readable when it exits */
	struct vcma_watch pid_w;
};

static struct restored *rs_of(const struct vcmad_guest *g)
{
	return g->link_priv;
}

static bool is_restored(const struct vcmad_guest *g)
{
	return g && !g->dead && g->link == &g->d->restore.link;
}

/* ---- the restore link: what a restored guest is while it waits ---- */

static int rl_notify(struct vcmad_guest *g)
{
	return 0; /* no ring yet */
}

static int rl_place(struct vcmad_guest *g, const struct vcma_region *r)
{
	return -EIO; /* it has no ring, so it asks for nothing */
}

static void rl_addr(const struct vcmad_guest *g, uint64_t mfn, uint64_t *gpa, uint64_t *bus)
{
	*bus = mfn << VCMA_PAGE_SHIFT;
	*gpa = *bus;
}

/* A region of a guest reclaimed: zeroed before anyone else gets it (scrub.h). */
static void rl_clear(struct vcmad_guest *g, const struct vcma_region *r)
{
	vcmad_scrub_add(g->d, r->mfn, r->nframes);
}

static int rl_read(struct vcmad_guest *g, const struct vcma_region *r, uint64_t off, void *buf, size_t len)
{
	/* a QEMU guest's regions are in its BAR, which only the vcmad that made it mapped */
	if (rs_of(g)->kind == VCMA_STORE_LINK_QEMU)
		return -ENXIO;
	return g->d->be.type->mem->read(&g->d->be, r->mfn, off, buf, len);
}

static void rs_close_pid(struct vcmad *d, struct restored *rs)
{
	if (rs->pidfd < 0)
		return;
	vcma_loop_del(&d->loop, &rs->pid_w);
	close(rs->pidfd);
	rs->pidfd = -1;
}

static int zero_unowned(struct vcmad *d);

/* g is no longer waiting: back (reattached), or reclaimed (however it went). */
static void left_waiting(struct vcmad_guest *g, bool back)
{
	struct vcmad *d = g->d;

	d->restore.waiting--;
	if (back)
		d->restore.back++;
	else
		d->restore.reclaimed++;
	if (rs_of(g)->vm && !--d->restore.vms_waiting) {
		zero_unowned(d);
		log_notice("restore: every VM taken back is back or reclaimed: handing out memory again");
		vcmad_relend_kick(d);
	}
	if (!d->restore.waiting)
		vcma_timer_cancel(&d->loop, &d->restore.grace);
}

static void rl_close(struct vcmad_guest *g, bool keep_memory)
{
	struct restored *rs = rs_of(g);

	rs_close_pid(g->d, rs);
	left_waiting(g, false);
}

static const struct vcmad_link_ops restore_link_ops = {
	.name = "restored",
	.kind = VCMAD_GUEST_NONE,
	.notify = rl_notify,
	.place = rl_place,
	.addr = rl_addr,
	.clear = rl_clear,
	.read = rl_read,
	.close = rl_close,
};

/* ---- reclaiming those that do not come back ---- */

static void reclaim(struct vcmad_guest *g, const char *why)
{
	vcmad_guest_detach(g, why);
}

static void grace_cb(struct vcma_timer *t)
{
	struct vcmad *d = (struct vcmad *)((char *)t - offsetof(struct vcmad, restore.grace));

	for (uint32_t i = 0; i < d->conf.max_guests; i++) {
		struct vcmad_guest *g = d->guests.slot[i];

		if (is_restored(g) && rs_of(g)->kind != VCMA_STORE_LINK_QEMU)
			reclaim(g, "not taken back within reattach_grace_ms of the restart");
	}
}

static void pid_cb(struct vcma_watch *w, uint32_t events)
{
	struct restored *rs = (struct restored *)((char *)w - offsetof(struct restored, pid_w));

	if (is_restored(rs->g))
		reclaim(rs->g, "its QEMU exited");
}

/* A QEMU cannot reattach (its ivshmem cannot handshake again): its regions stay its
 * own until its process, the one the record names, exits. */
static void watch_qemu(struct vcmad *d, struct vcmad_guest *g, const struct vcma_store_guest *sg)
{
	struct restored *rs = rs_of(g);
	int fd;

	if (!sg->qemu_pid || vcmad_proc_start_time(sg->qemu_pid) != sg->qemu_start_time) {
		reclaim(g, "its QEMU is gone");
		return;
	}
	fd = (int)syscall(SYS_pidfd_open, (pid_t)sg->qemu_pid, 0);
	if (fd < 0) {
		reclaim(g, errno == ESRCH ? "its QEMU is gone" : "its QEMU cannot be watched (pidfd_open)");
		return;
	}
	rs->pidfd = fd;
	if (vcma_loop_add(&d->loop, &rs->pid_w, fd, EPOLLIN, pid_cb)) {
		rs_close_pid(d, rs);
		reclaim(g, "its QEMU cannot be watched");
		return;
	}
	log_info("restore: guest %u (%s): its QEMU (pid %u) keeps %u region(s) until it exits; restart the guest "
		 "to give it a working one", g->id, g->name, sg->qemu_pid,
		 g->rq.nregions);
}

/* ---- reading the record ---- */

struct record {
	struct vcmad *d;
	struct vcma_store_guest *guests;
	struct vcma_store_region *regions;
	struct vcma_store_p2m *runs;
	size_t nguests, nregions, nruns, cap_guests, cap_regions, cap_runs;
	uint32_t npools;
	uint64_t handle_floor; /* the meta record's: every handle issued had a lower generation */
	int err;
};

#define PUSH(rec, arr, n, cap, item)                                                                     \
	do {                                                                                             \
		if ((rec)->n == (rec)->cap) {                                                            \
			size_t c_ = (rec)->cap ? (rec)->cap * 2 : 64;                                    \
			void *p_ = realloc((rec)->arr, c_ * sizeof(*(rec)->arr));                        \
			if (!p_)                                                                         \
				return -ENOMEM;                                                          \
			(rec)->arr = p_;                                                                 \
			(rec)->cap = c_;                                                                 \
		}                                                                                        \
		(rec)->arr[(rec)->n++] = *(item);                                                        \
	} while (0)

static int rec_pool(void *ctx, const struct vcma_store_pool *sp)
{
	struct record *rec = ctx;
	struct vcmad *d = rec->d;
	const struct vcma_pool *p = sp->id < d->core.npools ? d->core.pool[sp->id] : NULL;

	rec->npools++;
	if (!p || p->fm.base != sp->base_mfn || p->fm.nframes != sp->frames || strcmp(p->cfg.name, sp->name)) {
		log_err("restore: pool %u (%s, %llu frames at mfn %#llx) in the record is not configured so now: "
			"restore needs the pools where they were (put the configuration back, or move %s/data.mdb "
			"aside to start afresh)", sp->id, sp->name, (unsigned long long)sp->frames,
			(unsigned long long)sp->base_mfn, d->durable.dir);
		return -EINVAL;
	}
	return 0;
}

static int rec_meta(void *ctx, const struct vcma_store_meta *m)
{
	((struct record *)ctx)->handle_floor = m->handle_gen_floor;
	return 0;
}

static int rec_guest(void *ctx, const struct vcma_store_guest *g)
{
	PUSH((struct record *)ctx, guests, nguests, cap_guests, g);
	return 0;
}

static int rec_region(void *ctx, const struct vcma_store_region *r)
{
	PUSH((struct record *)ctx, regions, nregions, cap_regions, r);
	return 0;
}

static int rec_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	PUSH((struct record *)ctx, runs, nruns, cap_runs, m);
	return 0;
}

/* ---- taking it back ---- */

static struct vcmad_guest *restore_guest(struct vcmad *d, const struct vcma_store_guest *sg)
{
	struct vcmad_durable_guest dg = { .id = sg->id, .uid = sg->sim_uid, .pid = sg->qemu_pid,
					  .start_time = sg->qemu_start_time, .domid = sg->xen_domid };
	struct restored *rs = calloc(1, sizeof(*rs));
	struct vcmad_guest *g;
	int32_t status;

	if (!rs)
		return NULL;
	dg.link = sg->link == VCMA_STORE_LINK_QEMU  ? VCMAD_GUEST_QEMU
		  : sg->link == VCMA_STORE_LINK_XEN ? VCMAD_GUEST_XEN
						    : VCMAD_GUEST_SIM;
	snprintf(dg.name, sizeof(dg.name), "%s", sg->name);
	snprintf(dg.class_name, sizeof(dg.class_name), "%s", sg->class_name);
	memcpy(dg.token, sg->sim_token, sizeof(dg.token));
	g = vcmad_guest_restore(d, &d->restore.link, &dg, &status);
	if (!g) {
		log_err("restore: guest %u (%s): no room for it (max_guests %u)", sg->id, sg->name, d->conf.max_guests);
		free(rs);
		return NULL;
	}
	rs->g = g;
	rs->kind = sg->link;
	rs->pidfd = -1;
	g->link_priv = rs;
	g->role = sg->link == VCMA_STORE_LINK_QEMU ? "qemu" : "guest";
	memcpy(g->token, sg->sim_token, sizeof(g->token));
	return g;
}

static int restore_region(struct vcmad *d, const struct vcma_store_region *sr)
{
	struct vcmad_guest *g = vcmad_guest_find(d, sr->guest);
	struct vcma_region r = { .handle = sr->handle, .guest = sr->guest, .pool = sr->pool, .mfn = sr->first_mfn,
				 .nframes = sr->frames, .flags = sr->flags };
	int rc;

	if (!g) {
		log_err("restore: region %#llx belongs to guest %u, which the record does not have",
			(unsigned long long)sr->handle, sr->guest);
		return -EINVAL;
	}
	g->link->ops->addr(g, r.mfn, &r.gpa, &(uint64_t){ 0 });
	rc = vcma_core_restore_region(&d->core, &r);
	if (rc) {
		log_err("restore: region %#llx of guest %u (%llu frames at mfn %#llx): %s",
			(unsigned long long)sr->handle, sr->guest, (unsigned long long)sr->frames,
			(unsigned long long)sr->first_mfn, rc == -EEXIST ? "its frames are not free" : strerror(-rc));
		return rc;
	}
	g->rq.nregions++;
	g->rq.bytes += sr->frames << VCMA_PAGE_SHIFT;
	d->restore.restored_regions++;
	return 0;
}

/* VM vm's runs are runs[*i..]: its p2m, all of it. */
static int restore_vm(struct vcmad *d, const struct vcma_store_p2m *runs, size_t n, size_t *i)
{
	uint32_t id = runs[*i].vm;
	size_t j = *i;
	uint64_t frames = 0, *p2m;
	struct vcmad_guest *g = vcmad_guest_find(d, id);
	int rc;

	for (; j < n && runs[j].vm == id; j++) {
		if (runs[j].first_gfn != frames) {
			log_err("restore: VM %u: its p2m leaves gfn %#llx unbacked", id, (unsigned long long)frames);
			return -EINVAL;
		}
		frames += runs[j].count;
	}
	if (!g || g->vm) {
		log_err("restore: VM %u: %s", id, g ? "recorded twice" : "its guest is not in the record");
		return -EINVAL;
	}
	p2m = malloc(frames * sizeof(*p2m));
	if (!p2m)
		return -ENOMEM;
	for (size_t k = *i; k < j; k++)
		for (uint64_t f = 0; f < runs[k].count; f++)
			p2m[runs[k].first_gfn + f] = runs[k].mfn + f;
	rc = vcmad_vm_restore(d, id, g->name, frames, p2m, &g->vm);
	if (rc) {
		log_err("restore: VM %u (%s): its %llu frames of RAM cannot be taken back: %s", id, g->name,
			(unsigned long long)frames, rc == -EEXIST ? "a frame is not free" : strerror(-rc));
		return rc;
	}
	g->role = "vmm";
	d->restore.restored_vms++;
	*i = j;
	return 0;
}

struct owned {
	uint64_t mfn, n;
};

static int cmp_owned(const void *a, const void *b)
{
	const struct owned *x = a, *y = b;

	return x->mfn < y->mfn ? -1 : x->mfn > y->mfn;
}

/*
 * Zero every machine frame nobody owns now: destinations of a vacate in flight when
 * vcmad died, frames freed whose zeroing had not run, a dead guest's unfinished scrub.
 * Not before every VM taken back is back or reclaimed: a frame a VMM moved a page to
 * before the crash is nobody's in the record but holds that page, until the reattach
 * adopts it (and nothing is handed out meanwhile, so nobody can get the old bytes).
 */
static int zero_unowned(struct vcmad *d)
{
	const struct vcma_region *r;
	uint32_t cursor = 0;
	size_t n = d->core.regions.nlive, k = 0;
	uint64_t at = 0, end = d->be.machine_bytes >> VCMA_PAGE_SHIFT, zeroed = 0;
	struct owned *o;
	int rc = 0;

	for (struct vcmad_vm *vm = d->vms; vm; vm = vm->next)
		n += vm->ctl.ram_frames;
	o = malloc((n + 1) * sizeof(*o));
	if (!o)
		return -ENOMEM;
	while ((r = vcma_regions_next(&d->core.regions, &cursor)) && k < n)
		o[k++] = (struct owned){ r->mfn, r->nframes };
	for (struct vcmad_vm *vm = d->vms; vm; vm = vm->next)
		for (uint64_t g = 0; g < vm->ctl.ram_frames && k < n; g++)
			o[k++] = (struct owned){ vm->p2m[g], 1 };
	qsort(o, k, sizeof(*o), cmp_owned);
	for (size_t i = 0; i <= k && !rc; i++) {
		uint64_t next = i < k ? o[i].mfn : end;

		if (next > at) {
			rc = d->be.type->mem->zero(&d->be, at, next - at);
			zeroed += next - at;
		}
		if (i < k && o[i].mfn + o[i].n > at)
			at = o[i].mfn + o[i].n;
	}
	free(o);
	if (rc)
		log_err("restore: cannot zero the frames nobody owns: %s", strerror(-rc));
	else
		log_info("restore: %llu MiB nobody owns zeroed", (unsigned long long)(zeroed >> 8));
	return rc;
}

static void record_free(struct record *rec)
{
	free(rec->guests);
	free(rec->regions);
	free(rec->runs);
}

static int take_back(struct vcmad *d, struct record *rec)
{
	int rc = 0;

	for (size_t i = 0; i < rec->nguests; i++)
		if (!restore_guest(d, &rec->guests[i]))
			return -ENOSPC;
	for (size_t i = 0; i < rec->nregions && !rc; i++)
		rc = restore_region(d, &rec->regions[i]);
	for (size_t i = 0; i < rec->nruns && !rc;)
		rc = restore_vm(d, rec->runs, rec->nruns, &i);
	/* handles freed before the crash may have had higher generations than any taken
	 * back: none is issued again (PROTOCOL.md §6) */
	if (rec->handle_floor > d->core.regions.gen_floor)
		d->core.regions.gen_floor = rec->handle_floor > UINT32_MAX ? UINT32_MAX : (uint32_t)rec->handle_floor;
	return rc;
}

int vcmad_restore(struct vcmad *d)
{
	static const struct vcma_store_replay_ops ops = {
		.meta = rec_meta, .pool = rec_pool, .guest = rec_guest, .region = rec_region, .p2m = rec_p2m,
	};
	struct record rec = { .d = d };
	int rc;

	d->restore.link = (struct vcmad_link){ .ops = &restore_link_ops, .d = d };
	vcma_timer_init(&d->restore.grace, grace_cb);
	if (!d->durable.previous)
		return 0;
	rc = vcmad_durable_verify(d);
	if (rc) {
		log_err("restore: the record in %s breaks %s (above): vcmad does not start on it; `vcmactl state verify "
			"%s` says the same offline; move %s/data.mdb aside to start afresh", d->durable.dir,
			rc > 0 ? "the ownership invariants" : "reading", d->durable.dir, d->durable.dir);
		return rc > 0 ? -EUCLEAN : rc;
	}
	rc = vcmad_durable_replay(d, &ops, &rec);
	if (!rc && rec.npools != d->core.npools) {
		log_err("restore: the record has %u pool(s), the configuration %u: restore needs the pools where they "
			"were (put the configuration back, or move %s/data.mdb aside to start afresh)", rec.npools,
			d->core.npools, d->durable.dir);
		rc = -EINVAL;
	}
	if (!rc)
		rc = take_back(d, &rec);
	if (!rc)
		rc = vcmad_durable_restored(d);
	if (rc) {
		record_free(&rec);
		return rc < 0 ? rc : -EINVAL;
	}
	d->restore.since_ns = vcmad_now(d);
	d->restore.restored_guests = rec.nguests;
	for (uint32_t i = 0; i < d->conf.max_guests; i++) {
		struct vcmad_guest *g = d->guests.slot[i];

		if (!is_restored(g))
			continue;
		d->restore.waiting++;
		rs_of(g)->vm = g->vm != NULL; /* g->vm goes before the link is closed */
		d->restore.vms_waiting += g->vm != NULL;
	}
	if (!d->restore.vms_waiting && zero_unowned(d)) {
		record_free(&rec);
		return -EIO;
	}
	log_notice("restore: took back %llu guest(s) with %llu region(s) and %llu VM(s); sim guests have %u ms to "
		   "reattach", (unsigned long long)rec.nguests, (unsigned long long)d->restore.restored_regions,
		   (unsigned long long)d->restore.restored_vms, d->conf.reattach_grace_ms);
	if (d->restore.waiting)
		vcma_timer_arm_in(&d->loop, &d->restore.grace, (uint64_t)d->conf.reattach_grace_ms * 1000000ull);
	for (size_t i = 0; i < rec.nguests; i++) {
		struct vcmad_guest *g = vcmad_guest_find(d, rec.guests[i].id);

		if (is_restored(g) && rec.guests[i].link == VCMA_STORE_LINK_QEMU)
			watch_qemu(d, g, &rec.guests[i]);
	}
	record_free(&rec);
	return 0;
}

bool vcmad_restore_holding(const struct vcmad *d)
{
	return d->restore.vms_waiting > 0;
}

struct vcmad_guest *vcmad_restore_find(struct vcmad *d, uint32_t id)
{
	struct vcmad_guest *g = vcmad_guest_find(d, id);

	return is_restored(g) && rs_of(g)->kind == VCMA_STORE_LINK_SIM ? g : NULL;
}

struct vcmad_guest *vcmad_restore_holding_name(struct vcmad *d, const char *name)
{
	struct vcmad_guest *g = vcmad_guest_by_name(d, name);

	return is_restored(g) ? g : NULL;
}

bool vcmad_restore_token_ok(const struct vcmad_guest *g, const uint8_t token[16])
{
	uint8_t diff = 0, any = 0;

	/* constant time: the token is a secret */
	for (unsigned int i = 0; i < 16; i++) {
		diff |= (uint8_t)(g->token[i] ^ token[i]);
		any |= g->token[i];
	}
	return any && !diff;
}

void vcmad_restore_take(struct vcmad_guest *g, struct vcmad_link *l, void *priv)
{
	struct restored *rs = rs_of(g);

	rs_close_pid(g->d, rs);
	left_waiting(g, true);
	free(rs);
	g->link = l;
	g->link_priv = priv;
}
