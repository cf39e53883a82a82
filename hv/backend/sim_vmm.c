// SPDX-License-Identifier: MIT
/*
 * sim_vmm.c - the sim backend's VM control: the VMM channel on a simulated VM's
 * attach socket (PROTOCOL.md §9.1). PAUSE, REMAP, RESUME (and for a VMM that announced
 * them REMAP_RESUME, DROP, TRACK, UNTRACK, DIRTY_READ) go out; PAUSED, REMAPPED,
 * REPORT, REUSE, PIN, DIRTY, TRACKING and DROPPED come back, each checked (vmm_msg.c) before the VM's event
 * hooks hear of it. Nothing here blocks: sends are MSG_DONTWAIT on vcmad's own end
 * of the socket; one the VMM does not take (it stopped reading) cuts it off.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "backend/sim_backend.h"
#include "backend/vmm_msg.h"
#include "log.h"
#include "vcma_sim.h"

#define VMM_MSG_BUDGET 64u      /* messages read per loop turn */
#define VMM_PAGE_BUDGET 65536u /* pages they may name per turn */

_Static_assert(sizeof(struct vcmad_run) == sizeof(struct vcma_sim_run), "a run is a run on the wire");

static struct vcmad_sim_vmm *chan(const struct vcmad_vm_ctl *vm)
{
	return vm->be_priv;
}

/* Report the VM lost on the next loop turn: not from inside the call that failed,
 * which its caller (the vacate engine) is still in the middle of. */
static void lose_later(struct vcmad_sim_vmm *c, const char *why, bool violation)
{
	if (c->lost_t.armed || !c->vm)
		return;
	snprintf(c->why, sizeof(c->why), "%s", why);
	c->violation = violation;
	c->vm->lost = true;
	vcma_timer_arm(c->loop, &c->lost_t, vcma_loop_now(c->loop));
}

static void lost_cb(struct vcma_timer *t)
{
	struct vcmad_sim_vmm *c = (struct vcmad_sim_vmm *)((char *)t - offsetof(struct vcmad_sim_vmm, lost_t));

	if (c->vm)
		c->vm->ev->lost(c->vm, c->why, c->violation);
}

static int send_msg(struct vcmad_vm_ctl *vm, uint16_t type, uint32_t seq, int32_t status, const struct vcmad_run *runs,
		    uint32_t n)
{
	struct vcmad_sim_vmm *c = chan(vm);
	char buf[VCMA_SIM_MSG_MAX], why[96];
	struct vcma_sim_msg *m = (struct vcma_sim_msg *)buf;
	size_t len = sizeof(*m) + n * sizeof(struct vcma_sim_run);
	ssize_t rc;

	if (!c || !c->vm)
		return -ENOTCONN;
	if (n > VCMA_SIM_MSG_RUNS)
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	m->magic = VCMA_SIM_MAGIC;
	m->version = VCMA_SIM_VERSION;
	m->type = type;
	m->seq = seq;
	m->status = status;
	m->count = n;
	if (n)
		memcpy(m->run, runs, n * sizeof(*runs));
	rc = send(c->sock, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (rc == (ssize_t)len)
		return 0;
	rc = rc < 0 ? -errno : -EIO;
	/* a closed connection is the VM going away (it exited, perhaps in the middle of a
	 * pause): an ordinary detach; a full socket means the VMM stopped reading */
	if (rc == -EPIPE || rc == -ECONNRESET || rc == -ENOTCONN) {
		lose_later(c, "connection closed", false);
	} else {
		snprintf(why, sizeof(why), "cannot send a VMM message (type %u): %s", type,
			 rc == -EAGAIN ? "the VMM stopped reading its socket" : strerror((int)-rc));
		lose_later(c, why, true);
	}
	return (int)rc;
}

static int vmm_pause(struct vcmad_vm_ctl *vm, uint32_t seq)
{
	return send_msg(vm, VCMA_SIM_MSG_PAUSE, seq, 0, NULL, 0);
}

static int vmm_remap(struct vcmad_vm_ctl *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return send_msg(vm, VCMA_SIM_MSG_REMAP, seq, 0, runs, n);
}

static int vmm_resume(struct vcmad_vm_ctl *vm, uint32_t seq)
{
	return send_msg(vm, VCMA_SIM_MSG_RESUME, seq, 0, NULL, 0);
}

static int vmm_remap_resume(struct vcmad_vm_ctl *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return send_msg(vm, VCMA_SIM_MSG_REMAP_RESUME, seq, 0, runs, n);
}

static int vmm_drop(struct vcmad_vm_ctl *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return send_msg(vm, VCMA_SIM_MSG_DROP, seq, 0, runs, n);
}

static int vmm_track(struct vcmad_vm_ctl *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return send_msg(vm, VCMA_SIM_MSG_TRACK, seq, 0, runs, n);
}

static int vmm_untrack(struct vcmad_vm_ctl *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return send_msg(vm, VCMA_SIM_MSG_UNTRACK, seq, 0, runs, n);
}

static int vmm_dirty_read(struct vcmad_vm_ctl *vm, uint32_t seq)
{
	return send_msg(vm, VCMA_SIM_MSG_DIRTY_READ, seq, 0, NULL, 0);
}

static int vmm_reused(struct vcmad_vm_ctl *vm, uint32_t seq)
{
	return send_msg(vm, VCMA_SIM_MSG_REUSED, seq, 0, NULL, 0);
}

static int vmm_pinned(struct vcmad_vm_ctl *vm, uint32_t seq, int err)
{
	return send_msg(vm, VCMA_SIM_MSG_PINNED, seq, err < 0 ? -err : err, NULL, 0);
}

static void vmm_release(struct vcmad_vm_ctl *vm)
{
	struct vcmad_sim_vmm *c = chan(vm);

	if (!c)
		return;
	vcma_loop_del(c->loop, &c->w);
	vcma_timer_cancel(c->loop, &c->lost_t);
	c->vm = NULL;
	vm->be_priv = NULL;
}

/* One checked message: tell the VM's hooks. */
static void dispatch(struct vcmad_vm_ctl *vm, const struct vcma_sim_msg *m)
{
	const struct vcmad_run *runs = (const struct vcmad_run *)m->run;

	switch (m->type) {
	case VCMA_SIM_MSG_PAUSED: vm->ev->paused(vm, m->seq); break;
	case VCMA_SIM_MSG_REMAPPED: vm->ev->remapped(vm, m->seq, m->status); break;
	case VCMA_SIM_MSG_REPORT: vm->ev->report(vm, runs, m->count, true, -1); break;
	case VCMA_SIM_MSG_REUSE: vm->ev->report(vm, runs, m->count, false, m->seq); break;
	case VCMA_SIM_MSG_PIN: vm->ev->pin(vm, m->seq, runs, m->count); break;
	/* answers to what the VMM did not announce at attach were never asked for: the
	 * VM's hooks ignore them as answers nobody waits for (their seq is not outstanding) */
	case VCMA_SIM_MSG_DIRTY:
		vm->ev->dirty(vm, m->seq, runs, m->count, m->count < VCMA_SIM_MSG_RUNS, m->status);
		break;
	case VCMA_SIM_MSG_TRACKING: vm->ev->tracking(vm, m->seq, m->status); break;
	case VCMA_SIM_MSG_DROPPED: vm->ev->dropped(vm, m->seq, m->status); break;
	default: break; /* vcmad_vmm_msg_check() let no other type through */
	}
}

static void chan_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_sim_vmm *c = (struct vcmad_sim_vmm *)((char *)w - offsetof(struct vcmad_sim_vmm, w));
	static union {
		struct vcma_sim_msg m;
		char b[VCMA_SIM_MSG_MAX + 8];
	} u;
	const char *why;
	ssize_t n;

	/* drain: a VMM may have sent several messages; but per turn at most 64, and
	 * only until they named VMM_PAGE_BUDGET pages: what is left waits for the next
	 * turn (level-triggered), so a VMM that floods its channel delays itself only */
	for (uint64_t i = 0, pages = 0; i < VMM_MSG_BUDGET && pages < VMM_PAGE_BUDGET && c->vm && !c->vm->lost; i++) {
		struct vcmad_vm_ctl *vm = c->vm;

		n = recv(c->sock, u.b, sizeof(u.b), MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			vm->ev->lost(vm, n == 0 ? "connection closed" : "connection error", false);
			return;
		}
		if ((size_t)n > VCMA_SIM_MSG_MAX) {
			vm->ev->lost(vm, "oversized message on the attach socket", true);
			return;
		}
		/* everything below may rely on what this checks (vmm_msg.h) */
		if (vcmad_vmm_msg_check(u.b, (size_t)n, vm->ram_frames, &why)) {
			vm->ev->lost(vm, why, true);
			return;
		}
		for (uint32_t r = 0; r < u.m.count; r++)
			pages += u.m.run[r].count;
		dispatch(vm, &u.m);
	}
	if (c->vm && !c->vm->lost && (events & (EPOLLERR | EPOLLHUP)))
		c->vm->ev->lost(c->vm, "connection closed", false);
}

int vcmad_sim_vmm_start(struct vcmad_sim_vmm *c, struct vcmad_vm_ctl *vm, struct vcma_loop *loop, int sock,
			uint32_t flags)
{
	memset(c, 0, sizeof(*c));
	vm->one_trip = flags & VCMA_SIM_F_ONE_TRIP;
	vm->dirty_log = flags & VCMA_SIM_F_DIRTY_LOG;
	c->vm = vm;
	c->loop = loop;
	c->sock = sock;
	vcma_timer_init(&c->lost_t, lost_cb);
	vm->be_priv = c;
	return vcma_loop_add(loop, &c->w, sock, EPOLLIN | EPOLLRDHUP, chan_cb);
}

const struct vcmad_vm_ops vcmad_sim_vm_ops = {
	.pause = vmm_pause,
	.remap = vmm_remap,
	.resume = vmm_resume,
	.remap_resume = vmm_remap_resume,
	.drop = vmm_drop,
	.track = vmm_track,
	.untrack = vmm_untrack,
	.dirty_read = vmm_dirty_read,
	.reused = vmm_reused,
	.pinned = vmm_pinned,
	.release = vmm_release,
};
