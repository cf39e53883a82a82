// SPDX-License-Identifier: MIT
/*
 * test_libvcma - libvcma against a fake host living in the same process.
 *
 * The fake host is a thread that owns the other end of an attachment: a memfd laid out
 * as docs/PROTOCOL.md §2 says, a kick and an irq eventfd. It serves HELLO, ALLOC, FREE
 * and QUERY from the ring with the host's rules (copy once, notify only when the guest
 * asked, final check), checks every request the library sends for the things a real
 * host disconnects for, and misbehaves on request: silence, held and reordered
 * answers, unknown ids, a runaway rsp_prod, DEAD, malformed OK answers.
 *
 * For vcma_attach() a second fake plays vcmad's attach socket (struct host): it answers
 * ATTACH and REATTACH from a script, and "restarts" by closing the guest's connection
 * (and, if told, its listening socket) when the test says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vcma.h"
#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_sim.h"

/* ---- the fake host ---- */

enum fake_mode {
	FAKE_SERVE,
	FAKE_SILENT,   /* take requests, answer none (until fake_release) */
	FAKE_HOLD,     /* answer once hold_n requests are queued, newest first */
	FAKE_BAD_ID,   /* answer with an id nobody asked for */
	FAKE_JUMP,     /* publish rsp_prod a ring and more ahead */
	FAKE_DEAD,     /* cut the guest off on the next request */
	FAKE_VERSION,  /* HELLO gets VCMA_ST_VERSION */
	FAKE_BAD_ALLOC, /* ALLOC answers OK with a length that is not page-aligned */
};

#define FAKE_MAX_REGIONS 64
#define FAKE_MAX_HELD 128
#define FAKE_MAX_FREED 64
#define FAKE_NO_STATUS INT32_MIN

struct fake_region {
	uint64_t handle, bus, len;
};

struct fake {
	int shm_fd, kick_fd, irq_fd;
	uint8_t *shm;
	size_t size;
	struct vcma_ctrl *ctrl;
	struct vcma_ring_hdr *rh;
	union vcma_slot *slot;
	struct vcma_evt_hdr *eh;
	struct vcma_evt *evs;
	uint32_t slots, evt_slots;
	uint32_t req_cons, rsp_prod_pvt, evt_prod_pvt;

	pthread_t thr;
	bool running;
	atomic_bool stop;
	pthread_mutex_t lock; /* everything below */
	enum fake_mode mode;
	int32_t next_status; /* answer the next non-HELLO request with this, unless FAKE_NO_STATUS */
	unsigned int hold_n;
	bool no_kicks; /* set req_event far ahead: "don't kick me" */
	bool kicked_only; /* look at the ring only when kicked (no 5 ms timeout look) */
	unsigned int max_live; /* ALLOC gets LIMIT while this many regions are live (0: 64) */
	struct vcma_req held[FAKE_MAX_HELD];
	unsigned int nheld;
	struct fake_region region[FAKE_MAX_REGIONS];
	unsigned int nregion;
	uint64_t next_handle, next_bus;
	uint64_t freed[FAKE_MAX_FREED]; /* every FREE's handle, in the order taken */
	unsigned int nfreed;
	unsigned int nreq, kicks, violations;
	unsigned int nops[VCMA_OP_MAX + 1];
	struct vcma_req last[VCMA_OP_MAX + 1];
	char why[128];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void violation(struct fake *f, const char *why)
{
	f->violations++;
	snprintf(f->why, sizeof(f->why), "%s", why);
}

static bool wire_name_ok(const uint8_t *n, bool allow_empty)
{
	unsigned int i = 0;

	for (; i < VCMA_NAME_LEN && n[i]; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9') ||
		      n[i] == '_' || n[i] == '-' || n[i] == '.'))
			return false;
	if (i == VCMA_NAME_LEN || (!i && !allow_empty))
		return false;
	for (; i < VCMA_NAME_LEN; i++)
		if (n[i])
			return false;
	return true;
}

static bool name_zero(const uint8_t *n)
{
	for (unsigned int i = 0; i < VCMA_NAME_LEN; i++)
		if (n[i])
			return false;
	return true;
}

/* What vcmad disconnects for (§8.2): the library must never send any of it. */
static void check_req(struct fake *f, const struct vcma_req *q)
{
	if (q->flags)
		violation(f, "nonzero flags");
	switch (q->op) {
	case VCMA_OP_HELLO:
		if (q->handle || q->length || (q->arg0 >> 32) || !name_zero(q->name))
			violation(f, "HELLO garbage");
		break;
	case VCMA_OP_ALLOC:
		if (q->handle || q->arg1 || q->arg0 > 18 || !wire_name_ok(q->name, true))
			violation(f, "ALLOC garbage");
		break;
	case VCMA_OP_FREE:
		if (q->length || q->arg0 || q->arg1 || !name_zero(q->name))
			violation(f, "FREE garbage");
		break;
	case VCMA_OP_QUERY:
		if (q->length || q->arg0 || q->arg1 || (q->handle ? !name_zero(q->name) : !wire_name_ok(q->name, true)))
			violation(f, "QUERY garbage");
		break;
	default:
		violation(f, "unknown op");
	}
}

static void irq(struct fake *f)
{
	uint64_t one = 1;

	if (write(f->irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		violation(f, "irq write failed");
}

static void publish_rsp(struct fake *f, const struct vcma_rsp *r)
{
	uint32_t old = f->rsp_prod_pvt;

	memcpy(&f->slot[f->rsp_prod_pvt & (f->slots - 1)].rsp, r, sizeof(*r));
	f->rsp_prod_pvt++;
	vcma_store_release(&f->rh->rsp_prod, f->rsp_prod_pvt);
	vcma_mb();
	if (vcma_need_notify(old, f->rsp_prod_pvt, vcma_read_once(&f->rh->rsp_event)))
		irq(f);
}

static struct fake_region *fake_find(struct fake *f, uint64_t handle)
{
	for (unsigned int i = 0; i < f->nregion; i++)
		if (f->region[i].handle == handle)
			return &f->region[i];
	return NULL;
}

static void answer(struct fake *f, const struct vcma_req *q)
{
	struct vcma_rsp r;
	struct fake_region *reg;

	memset(&r, 0, sizeof(r));
	r.id = q->id;
	if (q->op == VCMA_OP_HELLO) {
		r.val[1] = (uint64_t)VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR;
		if (f->mode == FAKE_VERSION) {
			r.status = VCMA_ST_VERSION;
		} else {
			r.val[0] = q->arg1 & f->ctrl->host_features;
			f->ctrl->guest_features = r.val[0];
			vcma_store_release(&f->ctrl->state, (uint32_t)VCMA_STATE_CONNECTED);
		}
		publish_rsp(f, &r);
		return;
	}
	if (f->next_status != FAKE_NO_STATUS) {
		r.status = f->next_status;
		f->next_status = FAKE_NO_STATUS;
		publish_rsp(f, &r);
		return;
	}
	switch (q->op) {
	case VCMA_OP_ALLOC: {
		uint64_t len = (q->length + 4095) & ~4095ull;

		if (f->nregion == FAKE_MAX_REGIONS || (f->max_live && f->nregion >= f->max_live)) {
			r.status = VCMA_ST_LIMIT;
			break;
		}
		reg = &f->region[f->nregion++];
		reg->handle = f->next_handle++;
		reg->bus = f->next_bus;
		reg->len = len;
		f->next_bus += len;
		r.handle = reg->handle;
		r.bus = reg->bus;
		r.gpa = 0x40000000ull + reg->bus;
		r.length = f->mode == FAKE_BAD_ALLOC ? len - 8 : len;
		break;
	}
	case VCMA_OP_FREE:
		reg = fake_find(f, q->handle);
		r.handle = q->handle;
		if (f->nfreed < FAKE_MAX_FREED)
			f->freed[f->nfreed++] = q->handle;
		if (!reg) {
			r.status = VCMA_ST_NO_REGION;
			break;
		}
		*reg = f->region[--f->nregion];
		break;
	case VCMA_OP_QUERY:
		if (!q->handle) {
			r.length = 64ull << 20;
			r.val[0] = 60ull << 20;
			for (unsigned int i = 0; i < f->nregion; i++)
				r.val[1] += f->region[i].len;
			break;
		}
		reg = fake_find(f, q->handle);
		if (!reg) {
			r.status = VCMA_ST_NO_REGION;
			break;
		}
		r.handle = reg->handle;
		r.bus = reg->bus;
		r.gpa = 0x40000000ull + reg->bus;
		r.length = reg->len;
		break;
	}
	if (f->mode == FAKE_BAD_ID)
		r.id ^= 0x5a5a000000000000ull;
	publish_rsp(f, &r);
	if (f->mode == FAKE_JUMP) {
		/* only the published index runs away; the fake's own count stays right */
		vcma_store_release(&f->rh->rsp_prod, f->rsp_prod_pvt + f->slots + 2);
		irq(f);
	}
}

static void release_held(struct fake *f)
{
	/* newest first: answers need not come in request order */
	while (f->nheld)
		answer(f, &f->held[--f->nheld]);
}

static void process(struct fake *f)
{
	for (;;) {
		uint32_t prod = vcma_load_acquire(&f->rh->req_prod);

		if (prod - f->rsp_prod_pvt > f->slots)
			violation(f, "request ring overflow");
		while (f->req_cons != prod) {
			struct vcma_req q;
			uint64_t w[8];

			/* copy once (into u64s: vcma_copy_from_shared stores through uint64_t *) */
			vcma_copy_from_shared(w, &f->slot[f->req_cons & (f->slots - 1)].req, sizeof(w));
			memcpy(&q, w, sizeof(q));
			f->req_cons++;
			f->nreq++;
			check_req(f, &q);
			if (q.op <= VCMA_OP_MAX) {
				f->nops[q.op]++;
				f->last[q.op] = q;
			}
			if (f->mode == FAKE_DEAD && q.op != VCMA_OP_HELLO) {
				vcma_store_release(&f->ctrl->state, (uint32_t)VCMA_STATE_DEAD);
				irq(f);
				continue;
			}
			if ((f->mode == FAKE_SILENT || f->mode == FAKE_HOLD) && q.op != VCMA_OP_HELLO) {
				if (f->nheld < FAKE_MAX_HELD)
					f->held[f->nheld++] = q;
				if (f->mode == FAKE_HOLD && f->nheld >= f->hold_n)
					release_held(f);
				continue;
			}
			answer(f, &q);
		}
		vcma_write_once(&f->rh->req_event, f->no_kicks ? f->req_cons + 1000000 : f->req_cons + 1);
		vcma_mb();
		if (vcma_load_acquire(&f->rh->req_prod) == f->req_cons)
			return;
	}
}

static void *fake_thread(void *arg)
{
	struct fake *f = arg;

	while (!atomic_load(&f->stop)) {
		struct pollfd pfd = { .fd = f->kick_fd, .events = POLLIN };
		uint64_t cnt;

		bool kicked = false;

		/* a short timeout: the fake also serves guests that were told not to kick */
		if (poll(&pfd, 1, 5) > 0 && read(f->kick_fd, &cnt, sizeof(cnt)) == sizeof(cnt)) {
			kicked = true;
			pthread_mutex_lock(&f->lock);
			f->kicks++;
			pthread_mutex_unlock(&f->lock);
		}
		pthread_mutex_lock(&f->lock);
		if (vcma_load_acquire(&f->ctrl->state) != VCMA_STATE_DEAD && (kicked || !f->kicked_only))
			process(f);
		pthread_mutex_unlock(&f->lock);
	}
	return NULL;
}

static size_t area_size(uint32_t slots, uint32_t evt_slots)
{
	return VCMA_PROTO_PAGE + vcma_page_round(VCMA_RING_BYTES((uint64_t)slots)) +
	       vcma_page_round(VCMA_EVT_BYTES((uint64_t)evt_slots));
}

/* Lay out an area (READY); the thread starts with fake_run(). */
static struct fake *fake_new(uint32_t slots, uint32_t evt_slots)
{
	struct fake *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->slots = slots;
	f->evt_slots = evt_slots;
	f->size = area_size(slots, evt_slots);
	f->shm_fd = memfd_create("fake-ring", MFD_CLOEXEC);
	assert_true(f->shm_fd >= 0);
	assert_int_equal(ftruncate(f->shm_fd, (off_t)f->size), 0);
	f->shm = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED, f->shm_fd, 0);
	assert_true(f->shm != MAP_FAILED);
	f->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	f->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(f->kick_fd >= 0 && f->irq_fd >= 0);
	pthread_mutex_init(&f->lock, NULL);
	f->next_status = FAKE_NO_STATUS;
	f->next_handle = 0x100000001ull;
	f->next_bus = 0x10000000ull;

	f->ctrl = (struct vcma_ctrl *)f->shm;
	f->ctrl->magic = VCMA_PROTO_MAGIC;
	f->ctrl->major = VCMA_PROTO_MAJOR;
	f->ctrl->minor = VCMA_PROTO_MINOR;
	f->ctrl->hdr_size = sizeof(struct vcma_ctrl);
	f->ctrl->host_features = VCMA_F_KNOWN;
	f->ctrl->generation = 1;
	f->ctrl->guest_id = 7;
	f->ctrl->req_off = VCMA_PROTO_PAGE;
	f->ctrl->req_slots = slots;
	f->ctrl->evt_off = VCMA_PROTO_PAGE + vcma_page_round(VCMA_RING_BYTES((uint64_t)slots));
	f->ctrl->evt_slots = evt_slots;
	f->ctrl->max_outstanding = slots;
	f->ctrl->max_regions = 256;
	f->ctrl->max_bytes = UINT64_MAX;
	f->rh = vcma_req_ring(f->shm, f->ctrl);
	f->slot = vcma_req_slots(f->rh);
	f->eh = vcma_evt_ring(f->shm, f->ctrl);
	f->evs = vcma_evt_slots(f->eh);
	f->rh->req_event = f->rh->rsp_event = f->eh->evt_event = 1;
	vcma_store_release(&f->ctrl->state, (uint32_t)VCMA_STATE_READY);
	return f;
}

static void fake_run(struct fake *f)
{
	assert_int_equal(pthread_create(&f->thr, NULL, fake_thread, f), 0);
	f->running = true;
}

static struct fake *fake_start(uint32_t slots, uint32_t evt_slots)
{
	struct fake *f = fake_new(slots, evt_slots);

	fake_run(f);
	return f;
}

static void fake_free(struct fake *f)
{
	if (f->running) {
		atomic_store(&f->stop, true);
		pthread_join(f->thr, NULL);
	}
	munmap(f->shm, f->size);
	close(f->shm_fd);
	close(f->kick_fd);
	close(f->irq_fd);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static int fake_attach_rc(struct fake *f, struct vcma **v)
{
	return vcma_attach_fds(dup(f->shm_fd), f->size, dup(f->kick_fd), dup(f->irq_fd), v);
}

static struct vcma *fake_attach(struct fake *f)
{
	struct vcma *v = NULL;

	assert_int_equal(fake_attach_rc(f, &v), 0);
	assert_non_null(v);
	return v;
}

static void fake_set(struct fake *f, enum fake_mode mode)
{
	pthread_mutex_lock(&f->lock);
	f->mode = mode;
	pthread_mutex_unlock(&f->lock);
}

static void fake_status(struct fake *f, int32_t st)
{
	pthread_mutex_lock(&f->lock);
	f->next_status = st;
	pthread_mutex_unlock(&f->lock);
}

static unsigned int fake_get(struct fake *f, const unsigned int *field)
{
	unsigned int x;

	pthread_mutex_lock(&f->lock);
	x = *field;
	pthread_mutex_unlock(&f->lock);
	return x;
}

static struct vcma_req fake_last(struct fake *f, uint32_t op)
{
	struct vcma_req q;

	pthread_mutex_lock(&f->lock);
	q = f->last[op];
	pthread_mutex_unlock(&f->lock);
	return q;
}

static void fake_post_event(struct fake *f, uint32_t type, uint64_t handle, uint64_t arg0)
{
	struct vcma_evt e = { .type = type, .handle = handle, .arg0 = arg0 };
	uint32_t old = f->evt_prod_pvt;

	pthread_mutex_lock(&f->lock);
	memcpy(&f->evs[f->evt_prod_pvt & (f->evt_slots - 1)], &e, sizeof(e));
	f->evt_prod_pvt++;
	vcma_store_release(&f->eh->evt_prod, f->evt_prod_pvt);
	vcma_mb();
	if (vcma_need_notify(old, f->evt_prod_pvt, vcma_read_once(&f->eh->evt_event)))
		irq(f);
	pthread_mutex_unlock(&f->lock);
}

/* The fake holds a region (one a restarted host kept). */
static struct fake_region fake_hold(struct fake *f, uint64_t handle, uint64_t bus, uint64_t len)
{
	struct fake_region *reg;

	pthread_mutex_lock(&f->lock);
	assert_true(f->nregion < FAKE_MAX_REGIONS);
	reg = &f->region[f->nregion++];
	reg->handle = handle;
	reg->bus = bus;
	reg->len = len;
	pthread_mutex_unlock(&f->lock);
	return *reg;
}

static bool fake_freed(struct fake *f, uint64_t handle)
{
	bool yes = false;

	pthread_mutex_lock(&f->lock);
	for (unsigned int i = 0; i < f->nfreed; i++)
		yes |= f->freed[i] == handle;
	pthread_mutex_unlock(&f->lock);
	return yes;
}

/* Detach, then the fake must have seen nothing a real host disconnects for. */
static void finish(struct fake *f, struct vcma *v)
{
	vcma_detach(v);
	pthread_mutex_lock(&f->lock);
	if (f->violations)
		fail_msg("libvcma broke the protocol %u time(s), last: %s", f->violations, f->why);
	pthread_mutex_unlock(&f->lock);
	fake_free(f);
}

/* ---- HELLO and the control page ---- */

static void test_hello(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);

	assert_int_equal(vcma_guest_id(v), 7);
	assert_int_equal(vcma_features(v), VCMA_F_KNOWN);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_HELLO]), 1);
	assert_int_equal(fake_last(f, VCMA_OP_HELLO).arg0, (uint64_t)VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR);
	assert_int_equal(fake_last(f, VCMA_OP_HELLO).arg1, VCMA_F_KNOWN);
	assert_int_equal(vcma_read_once(&f->ctrl->state), VCMA_STATE_CONNECTED);
	assert_true(vcma_fd(v) >= 0);
	finish(f, v);

	/* the host offers less: the guest gets the intersection */
	f = fake_new(8, 8);
	f->ctrl->host_features = VCMA_F_EVENTS | (1ull << 40);
	fake_run(f);
	v = fake_attach(f);
	assert_int_equal(vcma_features(v), VCMA_F_EVENTS);
	finish(f, v);
}

static void test_version(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = (struct vcma *)1;

	fake_set(f, FAKE_VERSION);
	assert_int_equal(fake_attach_rc(f, &v), -EPROTONOSUPPORT);
	assert_null(v);
	fake_free(f);
}

/* §2.5: a bad control page is refused before anything is sent. */
static void test_ctrl_checks(void **state)
{
	static const struct {
		size_t off;
		uint32_t val;
		int rc;
	} cases[] = {
		{ offsetof(struct vcma_ctrl, magic), 0x12345678, -EIO },
		{ offsetof(struct vcma_ctrl, req_slots), 6, -EIO },
		{ offsetof(struct vcma_ctrl, evt_slots), 0, -EIO },
		{ offsetof(struct vcma_ctrl, req_slots), 1u << 20, -EIO },
		{ offsetof(struct vcma_ctrl, req_off), 100, -EIO },
		{ offsetof(struct vcma_ctrl, req_off), 0, -EIO },
		{ offsetof(struct vcma_ctrl, evt_off), VCMA_PROTO_PAGE, -EIO },     /* overlaps the request ring */
		{ offsetof(struct vcma_ctrl, evt_off), 0x7ffff000u, -EIO },         /* outside the area */
		{ offsetof(struct vcma_ctrl, max_outstanding), 0, -EIO },
		{ offsetof(struct vcma_ctrl, max_outstanding), 9, -EIO },
		{ offsetof(struct vcma_ctrl, hdr_size), 64, -EIO },
		{ offsetof(struct vcma_ctrl, state), VCMA_STATE_DEAD, -ECONNRESET },
		{ offsetof(struct vcma_ctrl, state), 9, -ECONNRESET },
		{ offsetof(struct vcma_ctrl, state), VCMA_STATE_CLOSING, -ESHUTDOWN },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake *f = fake_new(8, 8);
		struct vcma *v = NULL;

		memcpy(f->shm + cases[i].off, &cases[i].val, sizeof(uint32_t));
		fake_run(f);
		if (fake_attach_rc(f, &v) != cases[i].rc)
			fail_msg("case %zu: expected %d", i, cases[i].rc);
		assert_null(v);
		assert_int_equal(fake_get(f, &f->nreq), 0); /* nothing was sent */
		fake_free(f);
	}
	{
		struct fake *f = fake_new(8, 8);
		struct vcma *v = NULL;

		f->ctrl->major = 2;
		assert_int_equal(fake_attach_rc(f, &v), -EPROTONOSUPPORT);
		/* the size handed over must be the memfd's */
		assert_int_equal(vcma_attach_fds(dup(f->shm_fd), f->size + 4096, dup(f->kick_fd), dup(f->irq_fd), &v),
				 -EIO);
		assert_int_equal(vcma_attach_fds(-1, f->size, dup(f->kick_fd), dup(f->irq_fd), &v), -EBADF);
		assert_int_equal(vcma_attach_fds(dup(f->shm_fd), f->size, dup(f->kick_fd), dup(f->irq_fd), NULL), -EINVAL);
		fake_free(f);
	}
}

/* ---- requests ---- */

static void test_alloc_free_query(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri, qi;
	struct vcma_pool_info pi;

	assert_int_equal(vcma_alloc(v, 3 << 20, 0, 0, "video", &ri), 0);
	assert_int_equal(ri.handle, 0x100000001ull);
	assert_int_equal(ri.bus, 0x10000000ull);
	assert_int_equal(ri.gpa, 0x50000000ull);
	assert_int_equal(ri.size, 3 << 20);
	assert_null(ri.map);
	assert_int_equal(fake_last(f, VCMA_OP_ALLOC).length, 3 << 20);
	assert_memory_equal(fake_last(f, VCMA_OP_ALLOC).name, "video\0\0\0\0\0\0\0\0\0\0\0", VCMA_NAME_LEN);

	assert_int_equal(vcma_alloc(v, 5000, 10, 0, NULL, &qi), 0);
	assert_int_equal(qi.size, 8192);
	assert_int_equal(fake_last(f, VCMA_OP_ALLOC).arg0, 10);
	assert_true(name_zero(fake_last(f, VCMA_OP_ALLOC).name));

	assert_int_equal(vcma_query_region(v, ri.handle, &qi), 0);
	assert_int_equal(qi.handle, ri.handle);
	assert_int_equal(qi.gpa, ri.gpa);
	assert_int_equal(qi.bus, ri.bus);
	assert_int_equal(qi.size, ri.size);

	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	assert_int_equal(pi.size, 64 << 20);
	assert_int_equal(pi.allocatable, 60 << 20);
	assert_int_equal(pi.mine, (3 << 20) + 8192);
	assert_int_equal(vcma_query_pool(v, "video", &pi), 0);
	assert_memory_equal(fake_last(f, VCMA_OP_QUERY).name, "video\0\0\0\0\0\0\0\0\0\0\0", VCMA_NAME_LEN);
	assert_int_equal(fake_last(f, VCMA_OP_QUERY).handle, 0);

	assert_int_equal(vcma_free(v, ri.handle), 0);
	assert_int_equal(vcma_flush(v, NULL), 0); /* the posted FREE was answered */
	assert_int_equal(fake_last(f, VCMA_OP_FREE).handle, ri.handle);
	assert_int_equal(vcma_free(v, ri.handle), -ENOENT);
	assert_int_equal(vcma_query_region(v, ri.handle, &qi), -ENOENT);
	assert_int_equal(vcma_query_region(v, 0, &qi), -EINVAL);
	finish(f, v); /* frees the 8 KiB region */
}

/* Garbage the host would disconnect for never leaves the library. */
static void test_bad_args(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct vcma_pool_info pi;
	unsigned int n = f->nreq;

	assert_int_equal(vcma_alloc(v, 0, 0, 0, NULL, &ri), -EINVAL);
	assert_int_equal(vcma_alloc(v, 4096, 19, 0, NULL, &ri), -EINVAL);
	assert_int_equal(vcma_alloc(v, 4096, 0, 0x80, NULL, &ri), -EINVAL);
	assert_int_equal(vcma_alloc(v, 4096, 0, 0, "0123456789abcdef", &ri), -EINVAL);
	assert_int_equal(vcma_alloc(v, 4096, 0, 0, "bad name", &ri), -EINVAL);
	assert_int_equal(vcma_alloc(v, 4096, 0, 0, "a/b", &ri), -EINVAL);
	assert_int_equal(vcma_query_pool(v, "x\xff", &pi), -EINVAL);
	assert_int_equal(vcma_submit_alloc(v, 4096, 40, NULL, 1), -EINVAL);
	assert_int_equal(vcma_alloc(NULL, 4096, 0, 0, NULL, &ri), -EINVAL);
	assert_int_equal(fake_get(f, &f->nreq), n);
	/* the longest legal name passes */
	assert_int_equal(vcma_alloc(v, 4096, 18, 0, "0123456789abcde", &ri), 0);
	finish(f, v);

	assert_int_equal(vcma_attach(NULL, "", NULL, &v), -EINVAL);
	assert_int_equal(vcma_attach(NULL, "bad name", NULL, &v), -EINVAL);
	assert_int_equal(vcma_attach(NULL, "ok", "bad/class", &v), -EINVAL);
	assert_int_equal(vcma_attach(NULL, "0123456789012345678901234567890123", NULL, &v), -EINVAL);
}

static void test_status_errno(void **state)
{
	static const struct {
		int32_t st;
		int err;
	} map[] = {
		{ VCMA_ST_INVALID, -EINVAL },    { VCMA_ST_USE_NORMAL, -ERANGE },  { VCMA_ST_NO_POOL, -ENODEV },
		{ VCMA_ST_ACCESS, -EACCES },     { VCMA_ST_QUOTA, -EDQUOT },       { VCMA_ST_NO_SPACE, -ENOSPC },
		{ VCMA_ST_TOO_BIG, -E2BIG },     { VCMA_ST_BUSY, -EBUSY },         { VCMA_ST_NO_REGION, -ENOENT },
		{ VCMA_ST_NO_MEMORY, -ENOMEM },  { VCMA_ST_NOT_READY, -EIO },      { VCMA_ST_VERSION, -EPROTONOSUPPORT },
		{ VCMA_ST_LIMIT, -ENOBUFS },     { VCMA_ST_SHUTDOWN, -ESHUTDOWN }, { VCMA_ST_INTERNAL, -EIO },
		{ 16, -EIO },                    { -3, -EIO },                     { 0x7fffffff, -EIO },
	};
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct vcma_pool_info pi;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		fake_status(f, map[i].st);
		if (vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri) != map[i].err)
			fail_msg("status %d: expected %d", map[i].st, map[i].err);
		assert_int_equal(ri.handle, 0);
	}
	fake_status(f, VCMA_ST_NO_POOL);
	assert_int_equal(vcma_query_pool(v, "nope", &pi), -ENODEV);
	fake_status(f, VCMA_ST_ACCESS);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, "theirs", 5), 0);
	{
		struct vcma_completion c;
		uint64_t end = now_ns() + 2000000000ull;
		int n = 0;

		while (!n && now_ns() < end) {
			struct pollfd pfd = { .fd = vcma_fd(v), .events = POLLIN };

			poll(&pfd, 1, 100);
			n = vcma_complete(v, &c, 1);
		}
		assert_int_equal(n, 1);
		assert_int_equal(c.cookie, 5);
		assert_int_equal(c.result, -EACCES);
	}
	/* the attachment is fine after failures */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	finish(f, v);
}

/* ---- a host that does not answer, or answers wrongly ---- */

static void test_timeout(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct vcma_pool_info pi;
	uint64_t t0;

	fake_set(f, FAKE_SILENT);
	vcma_set_timeout(v, 50);
	t0 = now_ns();
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), -ETIMEDOUT);
	assert_true(now_ns() - t0 >= 45000000ull);
	assert_true(now_ns() - t0 < 2000000000ull);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ETIMEDOUT);

	/* the late answers come: the orphaned ALLOC is given back, nothing leaks */
	pthread_mutex_lock(&f->lock);
	f->mode = FAKE_SERVE;
	release_held(f);
	pthread_mutex_unlock(&f->lock);
	vcma_set_timeout(v, 2000);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0); /* the internal FREE was taken before this */
	assert_int_equal(fake_get(f, &f->nregion), 0);
	assert_int_equal(pi.mine, 0);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), 1);
	finish(f, v);
}

static void test_timeout_hello(void **state)
{
	struct fake *f = fake_new(8, 8);
	struct vcma *v = NULL;

	/* nobody serves the ring at all */
	setenv("VCMA_TIMEOUT_MS", "30", 1);
	assert_int_equal(fake_attach_rc(f, &v), -ETIMEDOUT);
	/* a host stuck in INIT */
	vcma_store_release(&f->ctrl->state, (uint32_t)VCMA_STATE_INIT);
	assert_int_equal(fake_attach_rc(f, &v), -ETIMEDOUT);
	unsetenv("VCMA_TIMEOUT_MS");
	assert_null(v);
	fake_free(f);
}

static void test_unknown_id(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct vcma_pool_info pi;

	fake_set(f, FAKE_BAD_ID);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), -EIO);
	fake_set(f, FAKE_SERVE);
	/* broken is broken: every later call fails the same way, without sending */
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -EIO);
	assert_int_equal(vcma_submit_free(v, 1, 1), -EIO);
	finish(f, v);
}

static void test_rsp_overflow(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_pool_info pi;

	fake_set(f, FAKE_JUMP);
	/* the first answer may be taken before the jump is seen; the jump itself is -EIO */
	int rc = vcma_query_pool(v, NULL, &pi);

	if (rc == 0)
		rc = vcma_query_pool(v, NULL, &pi);
	assert_int_equal(rc, -EIO);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -EIO);
	finish(f, v);
}

static void test_malformed_alloc(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct vcma_pool_info pi;

	fake_set(f, FAKE_BAD_ALLOC);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), -EIO);
	fake_set(f, FAKE_SERVE);
	/* only that call failed; the region it named was given back */
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	assert_int_equal(fake_get(f, &f->nregion), 0);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), 1);
	finish(f, v);
}

static void test_dead(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct vcma_pool_info pi;
	struct vcma_event ev;
	struct vcma_completion c;

	fake_set(f, FAKE_DEAD);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), -ECONNRESET);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	assert_int_equal(vcma_next_event(v, &ev), -ECONNRESET);
	assert_int_equal(vcma_complete(v, &c, 1), -ECONNRESET);
	finish(f, v);

	/* DEAD while idle, with async requests in flight: each gets its completion */
	f = fake_start(8, 8);
	v = fake_attach(f);
	fake_set(f, FAKE_SILENT);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 11), 0);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 12), 0);
	vcma_store_release(&f->ctrl->state, (uint32_t)VCMA_STATE_DEAD);
	irq(f);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	{
		struct vcma_completion cs[4];

		assert_int_equal(vcma_complete(v, cs, 4), 2);
		assert_int_equal(cs[0].cookie, 11);
		assert_int_equal(cs[0].result, -ECONNRESET);
		assert_int_equal(cs[1].cookie, 12);
		assert_int_equal(cs[1].result, -ECONNRESET);
		assert_int_equal(vcma_complete(v, cs, 4), -ECONNRESET);
	}
	finish(f, v);

	/* a new generation means the old attachment is gone */
	f = fake_start(8, 8);
	v = fake_attach(f);
	vcma_write_once(&f->ctrl->generation, 2u);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	finish(f, v);
}

static void test_closing(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	unsigned int n;

	vcma_store_release(&f->ctrl->state, (uint32_t)VCMA_STATE_CLOSING);
	n = fake_get(f, &f->nreq);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), -ESHUTDOWN);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 1), -ESHUTDOWN);
	assert_int_equal(fake_get(f, &f->nreq), n);
	finish(f, v);
}

/* ---- events ---- */

static void test_events(void **state)
{
	struct fake *f = fake_start(8, 4);
	struct vcma *v = fake_attach(f);
	struct vcma_event ev;
	uint64_t gfn = 100;

	assert_int_equal(vcma_next_event(v, &ev), 0);
	/* three rounds through a 4-slot ring, in order */
	for (int round = 0; round < 3; round++) {
		fake_post_event(f, VCMA_EVT_LENT_RECLAIM, 0, gfn);
		fake_post_event(f, VCMA_EVT_REGION_GONE, 0x42, 0);
		fake_post_event(f, 99, 1, 2); /* unknown types reach the caller, who ignores them */
		assert_int_equal(vcma_next_event(v, &ev), 1);
		assert_int_equal(ev.type, VCMA_EVT_LENT_RECLAIM);
		assert_int_equal(ev.arg0, gfn);
		assert_int_equal(vcma_next_event(v, &ev), 1);
		assert_int_equal(ev.type, VCMA_EVT_REGION_GONE);
		assert_int_equal(ev.handle, 0x42);
		assert_int_equal(vcma_next_event(v, &ev), 1);
		assert_int_equal(ev.type, 99);
		assert_int_equal(ev.arg1, 0);
		assert_int_equal(vcma_next_event(v, &ev), 0);
		/* the guest published what it consumed and asked for an irq for the next */
		assert_int_equal(vcma_read_once(&f->eh->evt_cons), (uint32_t)(round + 1) * 3);
		assert_int_equal(vcma_read_once(&f->eh->evt_event), (uint32_t)(round + 1) * 3 + 1);
		gfn++;
	}
	/* the irq fd tells an event loop about an event */
	{
		struct pollfd pfd = { .fd = vcma_fd(v), .events = POLLIN };

		fake_post_event(f, VCMA_EVT_SHUTDOWN, 0, 0);
		assert_int_equal(poll(&pfd, 1, 1000), 1);
		assert_int_equal(vcma_next_event(v, &ev), 1);
		assert_int_equal(ev.type, VCMA_EVT_SHUTDOWN);
	}
	/* evt_prod more than a ring ahead: the host is broken */
	pthread_mutex_lock(&f->lock);
	vcma_store_release(&f->eh->evt_prod, f->evt_prod_pvt + 5);
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(vcma_next_event(v, &ev), -EIO);
	finish(f, v);
}

/* ---- the event-loop API ---- */

static int collect(struct vcma *v, struct vcma_completion *c, int want)
{
	uint64_t end = now_ns() + 3000000000ull;
	int n = 0;

	while (n < want && now_ns() < end) {
		struct pollfd pfd = { .fd = vcma_fd(v), .events = POLLIN };
		int k = vcma_complete(v, c + n, want - n);

		if (k < 0)
			return k;
		n += k;
		if (n < want)
			poll(&pfd, 1, 100);
	}
	return n;
}

static void test_async(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_completion c[8];
	struct vcma_region_info ri;
	uint64_t handles[4];

	assert_int_equal(vcma_complete(v, c, 8), 0);
	/* four in flight, answered newest first */
	pthread_mutex_lock(&f->lock);
	f->mode = FAKE_HOLD;
	f->hold_n = 4;
	pthread_mutex_unlock(&f->lock);
	for (int i = 0; i < 4; i++)
		assert_int_equal(vcma_submit_alloc(v, (uint64_t)(i + 1) << 20, 0, NULL, 100 + i), 0);
	assert_int_equal(collect(v, c, 4), 4);
	for (int i = 0; i < 4; i++) {
		int k = (int)(c[i].cookie - 100);

		assert_true(k >= 0 && k < 4);
		assert_int_equal(c[i].result, 0);
		assert_int_equal(c[i].region.size, (uint64_t)(k + 1) << 20);
		assert_null(c[i].region.map);
		handles[k] = c[i].region.handle;
	}
	assert_int_equal(c[0].cookie, 103); /* newest first, as the fake answered */
	for (int i = 0; i < 4; i++)
		assert_int_equal(vcma_submit_free(v, handles[i], 200 + i), 0);
	assert_int_equal(collect(v, c, 4), 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(c[i].result, 0);
		assert_int_equal(c[i].region.handle, handles[c[i].cookie - 200]);
	}
	assert_int_equal(fake_get(f, &f->nregion), 0);

	/* no more than max_outstanding at once: the rest is -EAGAIN, not a violation */
	fake_set(f, FAKE_SILENT);
	for (int i = 0; i < 8; i++)
		assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, (uint64_t)i), 0);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 9), -EAGAIN);
	/* a blocking call meanwhile waits for room, and times out without sending */
	vcma_set_timeout(v, 30);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), -ETIMEDOUT);
	pthread_mutex_lock(&f->lock);
	f->mode = FAKE_SERVE;
	release_held(f);
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(collect(v, c, 8), 8);
	/* with room again, blocking calls and async ones mix */
	vcma_set_timeout(v, 2000);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 77), 0);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	assert_int_equal(collect(v, c, 1), 1); /* harvested by the blocking call, delivered here */
	assert_int_equal(c[0].cookie, 77);
	assert_int_equal(vcma_complete(v, c, 0), 0);
	assert_int_equal(vcma_complete(v, NULL, 1), -EINVAL);
	finish(f, v); /* detach frees the ten regions */
}

/* ---- mapping ---- */

struct map_log {
	int maps, unmaps, fail;
	uint64_t gpa, bus, size;
	void *addr;
	uint64_t unmap_size;
	void *unmap_addr;
};

static int test_map(void *ctx, uint64_t gpa, uint64_t bus, uint64_t size, void **addr)
{
	struct map_log *l = ctx;

	l->maps++;
	l->gpa = gpa;
	l->bus = bus;
	l->size = size;
	if (l->fail)
		return l->fail;
	l->addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (l->addr == MAP_FAILED)
		return -errno;
	*addr = l->addr;
	return 0;
}

static void test_unmap(void *ctx, void *addr, uint64_t size)
{
	struct map_log *l = ctx;

	l->unmaps++;
	l->unmap_addr = addr;
	l->unmap_size = size;
	munmap(addr, size);
}

static void test_mapper(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct map_log log = { 0 };
	struct vcma_region_info ri, qi;
	struct vcma_event ev;
	unsigned int n;

	/* no mapper: refused before the host is asked, nothing to leak */
	n = fake_get(f, &f->nreq);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &ri), -EOPNOTSUPP);
	assert_int_equal(fake_get(f, &f->nreq), n);

	vcma_set_mapper(v, test_map, test_unmap, &log);
	assert_int_equal(vcma_alloc(v, 2 << 20, 0, VCMA_ALLOC_MAP, NULL, &ri), 0);
	assert_int_equal(log.maps, 1);
	assert_int_equal(log.gpa, ri.gpa);
	assert_int_equal(log.bus, ri.bus);
	assert_int_equal(log.gpa, 0x40000000ull + log.bus);
	assert_int_equal(log.size, 2 << 20);
	assert_ptr_equal(ri.map, log.addr);
	memset(ri.map, 0xab, ri.size);
	assert_int_equal(vcma_query_region(v, ri.handle, &qi), 0);
	assert_ptr_equal(qi.map, ri.map);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	assert_int_equal(log.unmaps, 1);
	assert_ptr_equal(log.unmap_addr, ri.map);
	assert_int_equal(log.unmap_size, 2 << 20);

	/* without MAP the mapper is not called */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	assert_int_equal(log.maps, 1);
	assert_null(ri.map);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	assert_int_equal(log.unmaps, 1);

	/* the mapper fails: the region goes back to the host */
	log.fail = -ENOMEM;
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &ri), -ENOMEM);
	assert_int_equal(fake_get(f, &f->nregion), 0);
	log.fail = 0;

	/* a region the host reclaims is unmapped when its event is read */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &ri), 0);
	fake_post_event(f, VCMA_EVT_REGION_GONE, ri.handle, 0);
	assert_int_equal(vcma_next_event(v, &ev), 1);
	assert_int_equal(log.unmaps, 2);
	assert_ptr_equal(log.unmap_addr, ri.map);

	/* detach unmaps and frees what is left */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &ri), 0);
	pthread_mutex_lock(&f->lock);
	n = f->nops[VCMA_OP_FREE];
	pthread_mutex_unlock(&f->lock);
	vcma_detach(v);
	assert_int_equal(log.unmaps, 3);
	/* the REGION_GONE one was not freed again (the fake never dropped it: 1 left) */
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), n + 1);
	assert_int_equal(fake_get(f, &f->nregion), 1);
	assert_int_equal(fake_get(f, &f->violations), 0);
	fake_free(f);
}

/* ---- ring mechanics ---- */

static void test_wrap_and_kicks(void **state)
{
	struct fake *f = fake_start(4, 4);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct vcma_pool_info pi;
	unsigned int kicks;
	uint64_t h;

	/* many times around a 4-slot ring */
	for (int i = 0; i < 200; i++) {
		assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
		assert_int_equal(vcma_free(v, ri.handle), 0);
	}
	/* the last FREE was posted: once answered, the host has counted its kick too */
	assert_int_equal(vcma_flush(v, &h), 0);
	assert_true(fake_get(f, &f->kicks) > 0);
	/* a host that does not want kicks gets none; it still sees the requests */
	pthread_mutex_lock(&f->lock);
	f->no_kicks = true;
	vcma_write_once(&f->rh->req_event, f->req_cons + 1000000);
	kicks = f->kicks;
	pthread_mutex_unlock(&f->lock);
	for (int i = 0; i < 5; i++)
		assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	assert_int_equal(fake_get(f, &f->kicks), kicks);
	finish(f, v);
}

/* PROTOCOL.md §4.9: a posted FREE skips its kick only while the host's req_poll is
 * open; the next request's kick, or any wait, covers it; VCMA_LAZY_FREE=0 never skips. */
static void lazy_step(struct fake *f, struct vcma *v, bool window, bool expect_kick)
{
	struct vcma_region_info ri;
	unsigned int kicks, frees;

	vcma_write_once(&f->rh->req_poll, window ? 1u : 0u);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	kicks = fake_get(f, &f->kicks);
	frees = fake_get(f, &f->nops[VCMA_OP_FREE]);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	if (expect_kick) {
		for (int i = 0; i < 2000 && fake_get(f, &f->nops[VCMA_OP_FREE]) == frees; i++)
			usleep(1000);
		assert_int_equal(fake_get(f, &f->kicks), kicks + 1);
		assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), frees + 1);
		return;
	}
	/* no kick: a host that looks only when kicked does not see it */
	usleep(30000);
	assert_int_equal(fake_get(f, &f->kicks), kicks);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), frees);
}

static void test_lazy_free(void **state)
{
	struct fake *f = fake_start(8, 8), *f2;
	struct vcma *v = fake_attach(f), *v2;
	struct vcma_region_info ri;
	unsigned int kicks, frees;

	(void)state;
	assert_true(vcma_features(v) & VCMA_F_LAZY_FREE);
	pthread_mutex_lock(&f->lock);
	f->kicked_only = true;
	pthread_mutex_unlock(&f->lock);
	lazy_step(f, v, false, true); /* window closed: kicked */
	lazy_step(f, v, true, false); /* open: not kicked, not seen */
	/* the next request's kick covers it: the FREE is taken before the ALLOC */
	kicks = fake_get(f, &f->kicks);
	frees = fake_get(f, &f->nops[VCMA_OP_FREE]);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	assert_int_equal(fake_get(f, &f->kicks), kicks + 1);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), frees + 1);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	usleep(30000);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), frees + 1);
	/* a wait settles it: vcma_flush() kicks for the FREE it waits for */
	assert_int_equal(vcma_flush(v, NULL), 0);
	assert_int_equal(fake_get(f, &f->kicks), kicks + 2);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), frees + 2);
	finish(f, v);

	/* VCMA_LAZY_FREE=0: not asked for, so every posted FREE kicks */
	f2 = fake_start(8, 8);
	setenv("VCMA_LAZY_FREE", "0", 1);
	v2 = fake_attach(f2);
	unsetenv("VCMA_LAZY_FREE");
	assert_false(vcma_features(v2) & VCMA_F_LAZY_FREE);
	pthread_mutex_lock(&f2->lock);
	f2->kicked_only = true;
	pthread_mutex_unlock(&f2->lock);
	lazy_step(f2, v2, true, true);
	finish(f2, v2);
}

static void test_spin(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v;
	struct vcma_pool_info pi;

	setenv("VCMA_SPIN_US", "200", 1);
	v = fake_attach(f);
	unsetenv("VCMA_SPIN_US");
	for (int i = 0; i < 20; i++)
		assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	finish(f, v);
}

/* §8.1: the library never sends faster than burst + rate*t. */
static void test_pacing(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v;
	struct vcma_pool_info pi;
	struct vcma_completion c[8];
	uint64_t t0;
	int n = 0, again = 0;

	setenv("VCMA_RATE", "1000", 1);
	setenv("VCMA_BURST", "5", 1);
	v = fake_attach(f); /* HELLO took one token */
	unsetenv("VCMA_RATE");
	unsetenv("VCMA_BURST");
	t0 = now_ns();
	for (int i = 0; i < 24; i++)
		assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	/* 4 from the burst, then 20 at 1 ms each */
	assert_true(now_ns() - t0 >= 18000000ull);
	/* async: over the rate is -EAGAIN, not a wait */
	for (int i = 0; i < 8; i++) {
		int rc = vcma_submit_alloc(v, 1 << 20, 0, NULL, (uint64_t)i);

		if (rc == -EAGAIN) {
			again++;
		} else {
			assert_int_equal(rc, 0);
			n++;
		}
	}
	assert_true(again > 0);
	assert_int_equal(collect(v, c, n), n);
	finish(f, v);
}

/* Blocking calls from several threads on one handle are serialized. */
struct thr_arg {
	struct vcma *v;
	int errors;
};

static void *thr_main(void *p)
{
	struct thr_arg *a = p;

	for (int i = 0; i < 50; i++) {
		struct vcma_region_info ri;

		if (vcma_alloc(a->v, 1 << 20, 0, 0, NULL, &ri) || vcma_free(a->v, ri.handle))
			a->errors++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct thr_arg a[4];
	pthread_t t[4];

	for (int i = 0; i < 4; i++) {
		a[i].v = v;
		a[i].errors = 0;
		assert_int_equal(pthread_create(&t[i], NULL, thr_main, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].errors, 0);
	}
	assert_int_equal(vcma_flush(v, NULL), 0); /* the last FREEs were posted */
	assert_int_equal(fake_get(f, &f->nregion), 0);
	finish(f, v);
}

/* ---- posted FREEs (vcma_free) ---- */

/* Serve again, answering what was held, after ms milliseconds (another thread). */
struct later {
	struct fake *f;
	unsigned int ms;
	pthread_t thr;
};

static void *later_main(void *p)
{
	struct later *l = p;
	struct timespec ts = { .tv_sec = l->ms / 1000, .tv_nsec = (long)(l->ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
	pthread_mutex_lock(&l->f->lock);
	l->f->mode = FAKE_SERVE;
	release_held(l->f);
	pthread_mutex_unlock(&l->f->lock);
	return NULL;
}

static void serve_later(struct later *l, struct fake *f, unsigned int ms)
{
	l->f = f;
	l->ms = ms;
	assert_int_equal(pthread_create(&l->thr, NULL, later_main, l), 0);
}

/* vcma_free() returns before the answer; an ALLOC that needs the memory gets it. */
static void test_posted_order(void **state)
{
	struct fake *f = fake_start(4, 4);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct later l;
	uint64_t t0;

	pthread_mutex_lock(&f->lock);
	f->max_live = 1; /* one region at a time: the next ALLOC needs the FREE taken first */
	pthread_mutex_unlock(&f->lock);
	for (int i = 0; i < 300; i++) {
		assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
		assert_int_equal(vcma_free(v, ri.handle), 0);
	}
	/* posted: a host that does not answer does not hold vcma_free() up (the fake acts
	 * on held requests only when it answers them, newest first: no limit here) */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	pthread_mutex_lock(&f->lock);
	f->max_live = 0;
	f->mode = FAKE_SILENT;
	pthread_mutex_unlock(&f->lock);
	vcma_set_timeout(v, 2000);
	t0 = now_ns();
	assert_int_equal(vcma_free(v, ri.handle), 0);
	assert_true(now_ns() - t0 < 500000000ull);
	assert_int_equal(fake_get(f, &f->nregion), 1); /* taken, held, not answered */
	/* the ALLOC waits for its own answer; the FREE's comes with it (one trip) */
	serve_later(&l, f, 30);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	pthread_join(l.thr, NULL);
	assert_int_equal(vcma_flush(v, NULL), 0);
	/* the synchronous free is still there, and says what the host said */
	assert_int_equal(vcma_free_sync(v, ri.handle), 0);
	assert_int_equal(fake_get(f, &f->nregion), 0);
	assert_int_equal(vcma_free_sync(v, ri.handle), -ENOENT);
	finish(f, v);
}

/* Errors: the caller's mistakes now, the host's refusal of a posted FREE at vcma_flush(). */
static void test_posted_error(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri, r2;
	unsigned int n;
	uint64_t h = 1;

	/* a handle this attachment does not hold is sent and awaited: -ENOENT at once */
	assert_int_equal(vcma_free(v, 0x4242), -ENOENT);
	assert_int_equal(fake_last(f, VCMA_OP_FREE).handle, 0x4242);
	assert_int_equal(vcma_free(v, 0), -ENOENT);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	assert_int_equal(vcma_free(v, ri.handle), -ENOENT); /* a double free */
	assert_int_equal(vcma_flush(v, &h), 0);
	assert_int_equal(h, 0);

	/* the host reclaimed a region, and the guest frees it before reading the event */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	assert_int_equal(vcma_alloc(v, 2 << 20, 0, 0, NULL, &r2), 0);
	pthread_mutex_lock(&f->lock);
	{
		struct fake_region *reg = fake_find(f, ri.handle);

		assert_non_null(reg);
		*reg = f->region[--f->nregion];
	}
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(vcma_free(v, ri.handle), 0); /* posted: the refusal comes later */
	assert_int_equal(vcma_free(v, r2.handle), 0); /* fine, and not reported */
	assert_int_equal(vcma_flush(v, &h), -ENOENT);
	assert_int_equal(h, ri.handle);
	assert_int_equal(vcma_flush(v, &h), 0); /* reported once */
	assert_int_equal(h, 0);
	/* another call in between does not eat it: it waits for vcma_flush() */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	pthread_mutex_lock(&f->lock);
	f->next_status = VCMA_ST_NO_REGION; /* the next request: the posted FREE */
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &r2), 0);
	assert_int_equal(vcma_flush(v, &h), -ENOENT);
	assert_int_equal(h, ri.handle);
	assert_int_equal(vcma_flush(v, NULL), 0);
	/* the library forgot the region when it posted the FREE: detach frees only r2 */
	pthread_mutex_lock(&f->lock);
	n = f->nops[VCMA_OP_FREE];
	pthread_mutex_unlock(&f->lock);
	vcma_detach(v);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), n + 1);
	assert_int_equal(fake_get(f, &f->violations), 0);
	fake_free(f);
}

/* vcma_detach() waits for posted FREEs (and its own) to be answered, up to the timeout. */
static void test_posted_detach(void **state)
{
	struct fake *f = fake_start(8, 8);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri;
	struct later l;
	uint64_t t0, dt;

	for (int i = 0; i < 3; i++)
		assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	fake_set(f, FAKE_SILENT);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	serve_later(&l, f, 80);
	t0 = now_ns();
	vcma_detach(v); /* posts the two held regions' FREEs, waits for all three answers */
	dt = now_ns() - t0;
	pthread_join(l.thr, NULL);
	assert_true(dt >= 70000000ull);
	assert_int_equal(fake_get(f, &f->nregion), 0);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), 3);
	assert_int_equal(fake_get(f, &f->rsp_prod_pvt), fake_get(f, &f->req_cons)); /* all answered */
	assert_int_equal(fake_get(f, &f->violations), 0);
	fake_free(f);

	/* a host that never answers costs one timeout in all, not one per region */
	f = fake_start(8, 8);
	v = fake_attach(f);
	for (int i = 0; i < 4; i++)
		assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	fake_set(f, FAKE_SILENT);
	assert_int_equal(vcma_free(v, ri.handle), 0);
	vcma_set_timeout(v, 60);
	t0 = now_ns();
	vcma_detach(v);
	dt = now_ns() - t0;
	assert_true(dt >= 50000000ull && dt < 1000000000ull);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), 4);
	assert_int_equal(fake_get(f, &f->violations), 0);
	fake_free(f);
}

/* Posted FREEs never overflow the ring: with max_outstanding unanswered, vcma_free() waits. */
static void test_posted_ring_full(void **state)
{
	struct fake *f = fake_start(4, 4);
	struct vcma *v = fake_attach(f);
	struct vcma_region_info ri[6];
	struct vcma_region_info x;
	struct later l;
	uint64_t t0;

	for (int i = 0; i < 6; i++)
		assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri[i]), 0);
	fake_set(f, FAKE_SILENT);
	for (int i = 0; i < 4; i++)
		assert_int_equal(vcma_free(v, ri[i].handle), 0);
	/* the ring is full of posted FREEs: async callers are told to come back */
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 1), -EAGAIN);
	/* a free that finds no room in time leaves the region held, as if not called */
	vcma_set_timeout(v, 40);
	t0 = now_ns();
	assert_int_equal(vcma_free(v, ri[4].handle), -ETIMEDOUT);
	assert_true(now_ns() - t0 >= 35000000ull);
	assert_int_equal(fake_get(f, &f->nops[VCMA_OP_FREE]), 4);
	/* with a longer timeout it waits for room, then posts */
	vcma_set_timeout(v, 5000);
	serve_later(&l, f, 50);
	t0 = now_ns();
	assert_int_equal(vcma_free(v, ri[4].handle), 0);
	assert_true(now_ns() - t0 >= 40000000ull);
	pthread_join(l.thr, NULL);
	assert_int_equal(vcma_flush(v, NULL), 0);
	assert_int_equal(fake_get(f, &f->nregion), 1);
	assert_int_equal(vcma_query_region(v, ri[5].handle, &x), 0); /* the one still held */
	/* many frees back to back around a 4-slot ring */
	for (int i = 0; i < 40; i++)
		assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &x), 0);
	assert_int_equal(vcma_free(v, ri[5].handle), 0);
	finish(f, v); /* no "request ring overflow" seen by the fake */
}

/* ---- vcma_attach over a socket ---- */

struct srv {
	int listen_fd;
	char path[108];
	struct fake *f;
	int32_t status;
	int nfds;
	int conn;
	struct vcma_sim_attach got;
};

/* (From the fake hosts' threads: a failure shows as the client's.) */
static void send_token(int conn, uint32_t guest_id, uint32_t grace_ms, uint8_t seed)
{
	struct vcma_sim_token t = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_TOKEN,
		.guest_id = guest_id, .grace_ms = grace_ms,
	};

	for (unsigned int i = 0; i < sizeof(t.token); i++)
		t.token[i] = (uint8_t)(seed + 3 * i);
	if (send(conn, &t, sizeof(t), MSG_NOSIGNAL) != (ssize_t)sizeof(t))
		return;
}

static void *srv_main(void *p)
{
	struct srv *s = p;
	struct vcma_sim_attach_rsp rsp = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH_RSP,
	};
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { .iov_base = &rsp, .iov_len = sizeof(rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fds[4];

	s->conn = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (s->conn < 0 || recv(s->conn, &s->got, sizeof(s->got), 0) != (ssize_t)sizeof(s->got))
		return NULL;
	rsp.status = s->status;
	if (!s->status) {
		rsp.guest_id = 7;
		rsp.shm_size = s->f->size;
		rsp.window_gpa = 0x40000000ull;
		rsp.nfds = 3;
		fds[0] = s->f->shm_fd;
		fds[1] = s->f->kick_fd;
		fds[2] = s->f->irq_fd;
		fds[3] = s->f->irq_fd; /* an extra the client must close */
		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)s->nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)s->nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)s->nfds);
	}
	if (sendmsg(s->conn, &mh, MSG_NOSIGNAL) < 0)
		return NULL;
	/* a host that keeps nothing for a restart (grace 0): the end of the connection
	 * is the end of the guest, as without a token */
	if (!s->status && (s->got.flags & VCMA_SIM_F_REATTACH))
		send_token(s->conn, 7, 0, 1);
	return NULL;
}

static void srv_listen(struct srv *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(s->path, sizeof(s->path), "/tmp/test-libvcma-%d.sock", (int)getpid());
	unlink(s->path);
	memcpy(sa.sun_path, s->path, sizeof(s->path));
	s->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(s->listen_fd >= 0);
	assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->listen_fd, 4), 0);
}

static int srv_attach(struct srv *s, struct vcma **v)
{
	pthread_t t;
	int rc;

	s->conn = -1;
	assert_int_equal(pthread_create(&t, NULL, srv_main, s), 0);
	rc = vcma_attach(s->path, "cam0", "camera", v);
	pthread_join(t, NULL);
	return rc;
}

static void test_attach_socket(void **state)
{
	struct srv s = { .nfds = 4 };
	struct vcma *v = NULL;
	struct vcma_region_info ri;
	struct vcma_pool_info pi;

	s.f = fake_start(8, 8);
	srv_listen(&s);
	assert_int_equal(srv_attach(&s, &v), 0);
	assert_int_equal(s.got.magic, VCMA_SIM_MAGIC);
	assert_int_equal(s.got.role, VCMA_SIM_ROLE_GUEST);
	assert_int_equal(s.got.ram_bytes, 0);
	assert_string_equal(s.got.name, "cam0");
	assert_string_equal(s.got.devclass, "camera");
	assert_int_equal(vcma_guest_id(v), 7);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &ri), 0);
	assert_int_equal(ri.gpa, 0x40000000ull + ri.bus);
	/* the host closes the connection: that is a detach */
	fake_set(s.f, FAKE_SILENT);
	close(s.conn);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	vcma_detach(v);
	fake_free(s.f);

	/* refusals map to errno; too few fds is a broken host */
	s.f = fake_start(8, 8);
	s.status = VCMA_ST_LIMIT;
	assert_int_equal(srv_attach(&s, &v), -ENOBUFS);
	close(s.conn);
	s.status = VCMA_ST_OK;
	s.nfds = 2;
	assert_int_equal(srv_attach(&s, &v), -EIO);
	close(s.conn);
	assert_null(v);
	fake_free(s.f);
	close(s.listen_fd);

	/* nobody listening */
	unlink(s.path);
	assert_int_equal(vcma_attach(s.path, "cam0", NULL, &v), -ENOENT);
	setenv("VCMA_SOCKET", s.path, 1);
	assert_int_equal(vcma_attach(NULL, "cam0", NULL, &v), -ENOENT);
	unsetenv("VCMA_SOCKET");
}

/* ---- restart and reattach (vcma_attach): a host that restarts ---- */

#define HOST_MAX_STEPS 8
#define HOST_MAX_RUNS 8
#define HOST_GUEST_ID 7
#define HOST_WINDOW_GPA 0x40000000ull

enum host_kind {
	HOST_ANSWER, /* accept one connection and answer its first message */
	HOST_NONE,   /* there must be no connection for accept_ms */
};

struct host_step {
	enum host_kind kind;
	bool restart;             /* first: wait for the test's go, then close the guest's connection */
	unsigned int restart_ms;  /* ... this long after the go */
	bool unlisten;            /* with the restart: nobody listens ... */
	unsigned int relisten_ms; /* ... until this long after (0: never again) */
	int32_t status;           /* the answer */
	struct fake *f;           /* OK: whose area and eventfds go along */
	uint32_t grace_ms;        /* in the TOKEN (0: 5000) */
	bool keep;                /* the connection becomes the guest's */
	unsigned int accept_ms;   /* how long to wait for the connection (0: 3000) */
	unsigned int nruns;       /* REGIONS after a reattach's OK */
	struct fake_region runs[HOST_MAX_RUNS];
};

struct host {
	int listen_fd;
	char path[108];
	int conn;
	pthread_t thr;
	atomic_int go, restarted;
	unsigned int nsteps;
	struct host_step step[HOST_MAX_STEPS];
	/* what the thread saw, per step: read after host_wait() */
	uint8_t got[HOST_MAX_STEPS][128];
	ssize_t got_len[HOST_MAX_STEPS];
	uint64_t t_accept[HOST_MAX_STEPS];
	unsigned int unexpected; /* connections a HOST_NONE step saw */
	char error[128];
};

/* The token the host gives in step i's TOKEN. */
static uint8_t host_seed(unsigned int i)
{
	return (uint8_t)(0x40 + 16 * i);
}

static int host_bind(struct host *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	unlink(h->path);
	memcpy(sa.sun_path, h->path, sizeof(h->path));
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int host_accept(struct host *h, unsigned int ms)
{
	struct pollfd pfd = { .fd = h->listen_fd, .events = POLLIN };

	if (h->listen_fd < 0) {
		usleep(ms * 1000u); /* nobody listening: nobody can connect */
		return -1;
	}
	if (poll(&pfd, 1, (int)ms) != 1)
		return -1;
	return accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
}

static void host_regions(int c, const struct host_step *st)
{
	struct vcma_sim_p2m m;

	memset(&m, 0, sizeof(m));
	m.magic = VCMA_SIM_MAGIC;
	m.version = VCMA_SIM_VERSION;
	m.type = VCMA_SIM_MSG_REGIONS;
	m.nruns = st->nruns;
	for (unsigned int k = 0; k < st->nruns; k++) {
		m.run[k].gfn = st->runs[k].handle;
		m.run[k].mfn = st->runs[k].bus / 4096;
		m.run[k].count = st->runs[k].len / 4096;
	}
	if (st->nruns && send(c, &m, sizeof(m), MSG_NOSIGNAL) != (ssize_t)sizeof(m))
		return; /* the client sees the end of the connection */
}

/* Answer step i's first message as vcmad does: the response (fds if OK), a TOKEN to a
 * client that asked (or reattached), the REGIONS after a reattach. */
static void host_answer(struct host *h, unsigned int i, int c)
{
	const struct host_step *st = &h->step[i];
	struct vcma_sim_attach_rsp rsp = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH_RSP, .status = st->status,
	};
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = &rsp, .iov_len = sizeof(rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	uint16_t type = 0;
	uint32_t flags = 0;
	bool reattach;

	if (h->got_len[i] >= 16) {
		memcpy(&type, h->got[i] + 6, sizeof(type));
		memcpy(&flags, h->got[i] + 12, sizeof(flags));
	}
	reattach = type == VCMA_SIM_MSG_REATTACH;
	if (st->status == VCMA_ST_OK) {
		int fds[3] = { st->f->shm_fd, st->f->kick_fd, st->f->irq_fd };
		struct cmsghdr *cm;

		rsp.guest_id = HOST_GUEST_ID;
		rsp.shm_size = st->f->size;
		rsp.window_gpa = HOST_WINDOW_GPA;
		rsp.nfds = 3;
		rsp.nruns = reattach ? st->nruns : 0;
		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(fds));
		memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	}
	if (sendmsg(c, &mh, MSG_NOSIGNAL) < 0) {
		snprintf(h->error, sizeof(h->error), "step %u: sendmsg: %s", i, strerror(errno));
		return;
	}
	if (st->status != VCMA_ST_OK)
		return;
	if (reattach || (flags & VCMA_SIM_F_REATTACH))
		send_token(c, HOST_GUEST_ID, st->grace_ms ? st->grace_ms : 5000, host_seed(i));
	if (reattach)
		host_regions(c, st);
}

/* The host dies: when the test says go (and restart_ms later), its end of the guest's
 * connection closes (and, if told, its listening socket goes for a while). */
static void host_restart(struct host *h, const struct host_step *st)
{
	for (int i = 0; i < 10000 && !atomic_exchange(&h->go, 0); i++)
		usleep(1000);
	usleep(st->restart_ms * 1000u);
	if (st->unlisten) {
		close(h->listen_fd);
		h->listen_fd = -1;
		unlink(h->path);
	}
	if (h->conn >= 0)
		close(h->conn);
	h->conn = -1;
	atomic_fetch_add(&h->restarted, 1);
	if (st->unlisten && st->relisten_ms) {
		usleep(st->relisten_ms * 1000u);
		h->listen_fd = host_bind(h);
	}
}

static void *host_main(void *p)
{
	struct host *h = p;

	for (unsigned int i = 0; i < h->nsteps; i++) {
		const struct host_step *st = &h->step[i];
		int c;

		if (st->restart)
			host_restart(h, st);
		c = host_accept(h, st->accept_ms ? st->accept_ms : 3000);
		if (st->kind == HOST_NONE) {
			if (c >= 0) {
				h->unexpected++;
				close(c);
			}
			continue;
		}
		if (c < 0) {
			snprintf(h->error, sizeof(h->error), "step %u: nobody connected", i);
			break;
		}
		h->t_accept[i] = now_ns();
		h->got_len[i] = recv(c, h->got[i], sizeof(h->got[i]), 0);
		host_answer(h, i, c);
		if (st->keep)
			h->conn = c;
		else
			close(c);
	}
	return NULL;
}

static void host_start(struct host *h)
{
	static int n;

	snprintf(h->path, sizeof(h->path), "/tmp/test-libvcma-host-%d-%d.sock", (int)getpid(), n++);
	h->conn = -1;
	h->listen_fd = host_bind(h);
	assert_true(h->listen_fd >= 0);
	assert_int_equal(pthread_create(&h->thr, NULL, host_main, h), 0);
}

/* The script has run; nothing went wrong on the host's side. */
static void host_wait(struct host *h)
{
	pthread_join(h->thr, NULL);
	if (h->error[0])
		fail_msg("fake host: %s", h->error);
}

static void host_wait_restart(struct host *h, int n)
{
	for (int i = 0; i < 5000 && atomic_load(&h->restarted) < n; i++)
		usleep(1000);
	assert_true(atomic_load(&h->restarted) >= n);
}

static void host_free(struct host *h)
{
	if (h->listen_fd >= 0)
		close(h->listen_fd);
	if (h->conn >= 0)
		close(h->conn);
	unlink(h->path);
}

static struct vcma *host_attach(struct host *h)
{
	struct vcma *v = NULL;

	assert_int_equal(vcma_attach(h->path, "cam0", NULL, &v), 0);
	assert_non_null(v);
	return v;
}

/* Step i got a REATTACH as §9.1 has it, showing the token of the host's step `from`. */
static void check_reattach_msg(struct host *h, unsigned int i, unsigned int from)
{
	struct vcma_sim_reattach m;

	assert_int_equal(h->got_len[i], sizeof(m));
	memcpy(&m, h->got[i], sizeof(m));
	assert_int_equal(m.magic, VCMA_SIM_MAGIC);
	assert_int_equal(m.version, VCMA_SIM_VERSION);
	assert_int_equal(m.type, VCMA_SIM_MSG_REATTACH);
	assert_int_equal(m.role, VCMA_SIM_ROLE_GUEST);
	assert_int_equal(m.flags, VCMA_SIM_F_REATTACH);
	assert_int_equal(m.guest_id, HOST_GUEST_ID);
	assert_int_equal(m.nruns, 0);
	assert_int_equal(m.ram_bytes, 0);
	for (unsigned int k = 0; k < sizeof(m.token); k++)
		assert_int_equal(m.token[k], (uint8_t)(host_seed(from) + 3 * k));
	assert_memory_equal(m.name, "cam0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", sizeof(m.name));
}

/* A second area for the restarted host; its handles differ from the first one's. */
static struct fake *fake_next(void)
{
	struct fake *f = fake_new(8, 8);

	f->ctrl->generation = 5; /* a new area: the generation starts anew */
	f->next_handle = 0x200000001ull;
	f->next_bus = 0x20000000ull;
	fake_run(f);
	return f;
}

static void finish2(struct fake *old, struct fake *f, struct vcma *v, struct host *h)
{
	finish(f, v);
	assert_int_equal(fake_get(old, &old->violations), 0);
	fake_free(old);
	if (h)
		host_free(h);
}

/*
 * The host restarts while a blocking ALLOC is in flight and a posted FREE unanswered.
 * The restarted host kept a and p (it never took p's FREE) and the ALLOC's region u,
 * and not b.
 */
static void test_reattach(void **state)
{
	struct fake *f1 = fake_start(8, 8), *f2 = fake_next();
	struct host h = { .nsteps = 2 };
	struct map_log log = { 0 };
	struct vcma_region_info a, b, p, x, qi;
	struct vcma_pool_info pi;
	struct fake_region u;
	unsigned int f1_nreq;
	struct vcma *v;
	int fd;

	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true };
	h.step[1] = (struct host_step){ .restart = true, .restart_ms = 30, .status = VCMA_ST_OK, .f = f2, .keep = true };
	host_start(&h);
	v = host_attach(&h);
	assert_int_equal(vcma_guest_id(v), HOST_GUEST_ID);
	fd = vcma_fd(v);
	vcma_set_mapper(v, test_map, test_unmap, &log);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &a), 0);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &b), 0);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &p), 0);
	memset(a.map, 0x5a, a.size);
	fake_set(f1, FAKE_SILENT); /* from now on the host answers nothing: it is dying */
	assert_int_equal(vcma_free(v, p.handle), 0);
	assert_int_equal(log.unmaps, 1);

	fake_hold(f2, a.handle, a.bus, a.size);
	fake_hold(f2, p.handle, p.bus, p.size);
	u = fake_hold(f2, 0x1000000ffull, 0x30000000ull, 1 << 20);
	h.step[1].runs[0] = (struct fake_region){ a.handle, a.bus, a.size };
	h.step[1].runs[1] = (struct fake_region){ p.handle, p.bus, p.size };
	h.step[1].runs[2] = u;
	h.step[1].nruns = 3;
	/* the posted FREE is taken (and held unanswered) before the count */
	for (int i = 0; i < 2000 && !fake_get(f1, &f1->nops[VCMA_OP_FREE]); i++)
		usleep(1000);
	assert_int_equal(fake_get(f1, &f1->nops[VCMA_OP_FREE]), 1);
	f1_nreq = fake_get(f1, &f1->nreq);
	atomic_store(&h.go, 1);
	vcma_set_timeout(v, 5000);
	/* in flight when the host goes: it fails, and the call takes the handle back */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &x), -ECONNRESET);
	host_wait(&h);
	check_reattach_msg(&h, 1, 0);
	assert_int_equal(fake_get(f1, &f1->nreq), f1_nreq + 1); /* the ALLOC, and nothing after */
	assert_int_equal(fake_get(f2, &f2->nops[VCMA_OP_HELLO]), 1);
	assert_int_equal(vcma_features(v), VCMA_F_KNOWN);
	assert_int_equal(vcma_guest_id(v), HOST_GUEST_ID);
	assert_int_equal(vcma_fd(v), fd);

	/* the posted FREE the host did not take goes again; vcma_flush() waits for it */
	assert_int_equal(vcma_flush(v, NULL), 0);
	assert_true(fake_freed(f2, p.handle));
	/* the ALLOC's region, which nobody asked for any more, is given back */
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0); /* taken after everything before it */
	assert_true(fake_freed(f2, u.handle));
	/* the region kept: the same handle, addresses, mapping and contents */
	assert_int_equal(vcma_query_region(v, a.handle, &qi), 0);
	assert_int_equal(qi.gpa, a.gpa);
	assert_int_equal(qi.bus, a.bus);
	assert_ptr_equal(qi.map, a.map);
	for (uint64_t k = 0; k < a.size; k += 4093)
		assert_int_equal(((uint8_t *)a.map)[k], 0x5a);
	/* the region the host did not keep is forgotten: unmapped, and not freed */
	assert_int_equal(log.unmaps, 2);
	assert_ptr_equal(log.unmap_addr, b.map);
	assert_false(fake_freed(f2, b.handle));
	assert_int_equal(vcma_free(v, b.handle), -ENOENT); /* not held: sent and refused */

	/* the new ring serves */
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &x), 0);
	assert_int_equal(x.handle, 0x200000001ull);
	assert_int_equal(fake_get(f2, &f2->nregion), 2); /* a and x */
	finish2(f1, f2, v, &h);
}

/* The same for an event loop: vcma_fd() says when to call in, the submission in
 * flight completes with -ECONNRESET, and nobody listens for a while after the restart. */
static void test_reattach_event_loop(void **state)
{
	struct fake *f1 = fake_start(8, 8), *f2 = fake_next();
	struct host h = { .nsteps = 2 };
	struct vcma_region_info a, qi;
	struct vcma_completion c[4];
	struct vcma_event ev;
	unsigned int wakeups = 0, idle = 0;
	bool failed = false;
	uint64_t end;
	struct vcma *v;
	int fd;

	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true };
	h.step[1] = (struct host_step){ .restart = true, .unlisten = true, .relisten_ms = 80, .status = VCMA_ST_OK,
					.f = f2, .keep = true };
	host_start(&h);
	v = host_attach(&h);
	fd = vcma_fd(v);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &a), 0);
	fake_set(f1, FAKE_SILENT);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 9), 0);
	fake_hold(f2, a.handle, a.bus, a.size);
	h.step[1].runs[0] = (struct fake_region){ a.handle, a.bus, a.size };
	h.step[1].nruns = 1;
	atomic_store(&h.go, 1);

	end = now_ns() + 3000000000ull;
	while (now_ns() < end && !(failed && fake_get(f2, &f2->nops[VCMA_OP_HELLO]))) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int n;

		if (poll(&pfd, 1, 1000) == 1)
			wakeups++;
		else
			idle++; /* the fd should have woken us before */
		n = vcma_complete(v, c, 4);
		assert_true(n >= 0);
		for (int i = 0; i < n; i++) {
			assert_int_equal(c[i].cookie, 9);
			assert_int_equal(c[i].result, -ECONNRESET);
			failed = true;
		}
		assert_true(vcma_next_event(v, &ev) >= 0); /* 0 while reattaching */
	}
	host_wait(&h);
	assert_true(failed);
	assert_int_equal(fake_get(f2, &f2->nops[VCMA_OP_HELLO]), 1);
	check_reattach_msg(&h, 1, 0);
	/* woken by the close, by the timer for each try before anyone listened, and by
	 * the answer; never left to time out */
	assert_int_equal(idle, 0);
	assert_true(wakeups >= 3);
	assert_int_equal(vcma_fd(v), fd);

	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 10), 0);
	assert_int_equal(collect(v, c, 1), 1);
	assert_int_equal(c[0].cookie, 10);
	assert_int_equal(c[0].result, 0);
	assert_int_equal(c[0].region.handle, 0x200000001ull);
	assert_int_equal(vcma_query_region(v, a.handle, &qi), 0);
	finish2(f1, f2, v, &h);
}

/* NO_REGION: the host did not keep the guest. Dead, no second try; the regions are
 * gone as after DEAD (the mapping goes at detach, nothing is freed). */
static void test_reattach_refused(void **state)
{
	struct fake *f1 = fake_start(8, 8);
	struct host h = { .nsteps = 3 };
	struct map_log log = { 0 };
	struct vcma_region_info a, x;
	struct vcma_pool_info pi;
	struct vcma_completion c;
	struct vcma_event ev;
	struct vcma *v;

	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true };
	h.step[1] = (struct host_step){ .restart = true, .restart_ms = 20, .status = VCMA_ST_NO_REGION };
	h.step[2] = (struct host_step){ .kind = HOST_NONE, .accept_ms = 200 };
	host_start(&h);
	v = host_attach(&h);
	vcma_set_mapper(v, test_map, test_unmap, &log);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &a), 0);
	fake_set(f1, FAKE_SILENT);
	atomic_store(&h.go, 1);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	host_wait(&h);
	check_reattach_msg(&h, 1, 0);
	assert_int_equal(h.unexpected, 0);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &x), -ECONNRESET);
	assert_int_equal(vcma_free(v, a.handle), -ECONNRESET);
	assert_int_equal(vcma_submit_alloc(v, 1 << 20, 0, NULL, 1), -ECONNRESET);
	assert_int_equal(vcma_complete(v, &c, 1), -ECONNRESET);
	assert_int_equal(vcma_next_event(v, &ev), -ECONNRESET);
	{
		struct pollfd pfd = { .fd = vcma_fd(v), .events = POLLIN };

		assert_int_equal(poll(&pfd, 1, 0), 0); /* nothing more will happen */
	}
	assert_int_equal(log.unmaps, 0);
	vcma_detach(v);
	assert_int_equal(log.unmaps, 1);
	assert_int_equal(fake_get(f1, &f1->nops[VCMA_OP_FREE]), 0);
	assert_int_equal(fake_get(f1, &f1->violations), 0);
	fake_free(f1);
	host_free(&h);

	/* cut off (DEAD), then the connection ends: nothing to take back, no try */
	memset(&h, 0, sizeof(h));
	h.nsteps = 2;
	f1 = fake_start(8, 8);
	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true };
	h.step[1] = (struct host_step){ .kind = HOST_NONE, .restart = true, .accept_ms = 300 };
	host_start(&h);
	v = host_attach(&h);
	vcma_store_release(&f1->ctrl->state, (uint32_t)VCMA_STATE_DEAD);
	atomic_store(&h.go, 1);
	host_wait_restart(&h, 1);
	assert_int_equal(vcma_complete(v, &c, 1), -ECONNRESET); /* sees the socket first */
	host_wait(&h);
	assert_int_equal(h.unexpected, 0);
	finish(f1, v);
	host_free(&h);
}

/* BUSY, SHUTDOWN, OK: retries with backoff (10 ms, then 20 ms). The host went down cleanly
 * (CLOSING): a call made after it went waits for the reattach and proceeds. A second
 * restart, without CLOSING, under an idle handle: the same, and the REATTACH shows the
 * token the first reattach brought, not the spent one. */
static void test_reattach_busy(void **state)
{
	struct fake *f1 = fake_start(8, 8), *f2 = fake_next(), *f3 = fake_next();
	struct host h = { .nsteps = 5 };
	struct vcma_region_info a;
	struct vcma_pool_info pi;
	struct vcma *v;

	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true };
	h.step[1] = (struct host_step){ .restart = true, .status = VCMA_ST_BUSY };
	h.step[2] = (struct host_step){ .status = VCMA_ST_SHUTDOWN }; /* a host stopping again: retried too */
	h.step[3] = (struct host_step){ .status = VCMA_ST_OK, .f = f2, .keep = true };
	h.step[4] = (struct host_step){ .restart = true, .status = VCMA_ST_OK, .f = f3, .keep = true };
	host_start(&h);
	v = host_attach(&h);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &a), 0);
	fake_hold(f2, a.handle, a.bus, a.size);
	fake_hold(f3, a.handle, a.bus, a.size);
	h.step[3].runs[0] = h.step[4].runs[0] = (struct fake_region){ a.handle, a.bus, a.size };
	h.step[3].nruns = h.step[4].nruns = 1;

	vcma_store_release(&f1->ctrl->state, (uint32_t)VCMA_STATE_CLOSING);
	atomic_store(&h.go, 1);
	host_wait_restart(&h, 1);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	assert_int_equal(fake_get(f2, &f2->nops[VCMA_OP_QUERY]), 1);
	for (unsigned int i = 1; i <= 3; i++)
		check_reattach_msg(&h, i, 0); /* a refusal does not spend the token */
	assert_true(h.t_accept[2] - h.t_accept[1] >= 9000000ull);
	assert_true(h.t_accept[3] - h.t_accept[2] >= 19000000ull);
	assert_true(h.t_accept[3] - h.t_accept[1] < 2000000000ull);

	/* this time it dies without CLOSING while the handle is idle: the next call (more
	 * than a millisecond later) sees the end before it sends, waits for the reattach
	 * and is served by the new ring */
	fake_set(f2, FAKE_SILENT);
	atomic_store(&h.go, 1);
	host_wait_restart(&h, 2);
	usleep(5000);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	host_wait(&h);
	check_reattach_msg(&h, 4, 3);
	assert_int_equal(fake_get(f3, &f3->nops[VCMA_OP_QUERY]), 1);
	assert_int_equal(fake_get(f2, &f2->violations), 0);
	fake_free(f2);
	finish2(f1, f3, v, &h);
}

/* Nobody comes back within the grace period: dead, for blocking calls and for an event
 * loop, which vcma_fd() wakes when the grace is over. */
static void test_reattach_grace(void **state)
{
	struct fake *f1 = fake_start(8, 8);
	struct host h = { .nsteps = 2 };
	struct vcma_region_info a;
	struct vcma_pool_info pi;
	struct vcma_completion c;
	unsigned int idle = 0;
	uint64_t t0, dt;
	struct vcma *v;
	int rc = 0;

	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true, .grace_ms = 150 };
	h.step[1] = (struct host_step){ .kind = HOST_NONE, .restart = true, .unlisten = true, .accept_ms = 1 };
	host_start(&h);
	v = host_attach(&h);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &a), 0);
	fake_set(f1, FAKE_SILENT);
	atomic_store(&h.go, 1);
	host_wait(&h);
	vcma_set_timeout(v, 5000);
	t0 = now_ns();
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	dt = now_ns() - t0;
	assert_true(dt >= 140000000ull && dt < 3000000000ull);
	t0 = now_ns();
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &a), -ECONNRESET);
	assert_true(now_ns() - t0 < 100000000ull); /* dead: no more tries */
	finish(f1, v);
	host_free(&h);

	memset(&h, 0, sizeof(h));
	h.nsteps = 2;
	f1 = fake_start(8, 8);
	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true, .grace_ms = 100 };
	h.step[1] = (struct host_step){ .kind = HOST_NONE, .restart = true, .unlisten = true, .accept_ms = 1 };
	host_start(&h);
	v = host_attach(&h);
	atomic_store(&h.go, 1);
	host_wait(&h);
	t0 = now_ns();
	while (rc == 0 && now_ns() - t0 < 3000000000ull) {
		struct pollfd pfd = { .fd = vcma_fd(v), .events = POLLIN };

		if (poll(&pfd, 1, 1000) != 1)
			idle++;
		rc = vcma_complete(v, &c, 1);
	}
	dt = now_ns() - t0;
	assert_int_equal(rc, -ECONNRESET);
	assert_int_equal(idle, 0);
	assert_true(dt >= 90000000ull && dt < 2000000000ull);
	finish(f1, v);
	host_free(&h);
}

/* vcma_reattach_fds() from another thread (the VMM's) while a blocking call waits on
 * the old irq fd, with no timeout: the call fails with -ECONNRESET, the handle serves
 * on the new rings. */
struct swapper {
	struct vcma *v;
	struct fake *f;
	const struct vcma_held_region *held;
	size_t nheld;
	int rc;
	pthread_t thr;
};

static void *swapper_main(void *p)
{
	struct swapper *sw = p;

	usleep(50000);
	sw->rc = vcma_reattach_fds(sw->v, dup(sw->f->shm_fd), sw->f->size, dup(sw->f->kick_fd), dup(sw->f->irq_fd),
				   sw->held, sw->nheld);
	return NULL;
}

static bool fd_closed(int fd)
{
	return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

static void test_reattach_fds(void **state)
{
	struct fake *f1 = fake_start(8, 8), *f2 = fake_next();
	struct map_log log = { 0 };
	struct vcma_region_info a, b, x, qi;
	struct vcma_held_region held[2];
	struct vcma_pool_info pi;
	struct fake_region u;
	struct swapper sw;
	struct vcma *v = fake_attach(f1);
	int fd = vcma_fd(v), dfd;
	uint64_t t0;

	vcma_set_mapper(v, test_map, test_unmap, &log);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, VCMA_ALLOC_MAP, NULL, &a), 0);
	assert_int_equal(vcma_alloc(v, 2 << 20, 0, VCMA_ALLOC_MAP, NULL, &b), 0);
	memset(a.map, 0xc3, a.size);
	fake_hold(f2, a.handle, a.bus, a.size);
	u = fake_hold(f2, 0x1000000ffull, 0x30000000ull, 1 << 20);
	/* the VMM's list, in its own order */
	held[0] = (struct vcma_held_region){ u.handle, u.bus, u.len };
	held[1] = (struct vcma_held_region){ a.handle, a.bus, a.size };

	fake_set(f1, FAKE_SILENT);
	sw = (struct swapper){ .v = v, .f = f2, .held = held, .nheld = 2, .rc = 1 };
	assert_int_equal(pthread_create(&sw.thr, NULL, swapper_main, &sw), 0);
	vcma_set_timeout(v, 4000); /* only the reattach should end this wait, long before */
	t0 = now_ns();
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	assert_true(now_ns() - t0 < 2000000000ull);
	pthread_join(sw.thr, NULL);
	assert_int_equal(sw.rc, 0);
	assert_int_equal(vcma_fd(v), fd);

	vcma_set_timeout(v, 5000);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	assert_int_equal(fake_get(f2, &f2->nops[VCMA_OP_HELLO]), 1);
	assert_true(fake_freed(f2, u.handle));
	assert_int_equal(vcma_query_region(v, a.handle, &qi), 0);
	assert_ptr_equal(qi.map, a.map);
	assert_int_equal(((uint8_t *)a.map)[a.size - 1], 0xc3);
	assert_int_equal(log.unmaps, 1);
	assert_ptr_equal(log.unmap_addr, b.map);
	assert_int_equal(vcma_alloc(v, 1 << 20, 0, 0, NULL, &x), 0);
	assert_int_equal(x.handle, 0x200000001ull);

	/* a list that contradicts a held region is a broken host */
	{
		struct fake *f3 = fake_next();
		struct vcma_held_region bad = { a.handle, a.bus + 4096, a.size };

		assert_int_equal(vcma_reattach_fds(v, dup(f3->shm_fd), f3->size, dup(f3->kick_fd), dup(f3->irq_fd), &bad, 1),
				 -EIO);
		assert_int_equal(vcma_query_pool(v, NULL, &pi), -EIO);
		assert_int_equal(fake_get(f3, &f3->violations), 0);
		fake_free(f3);
	}
	/* no handle, or one whose socket is its own: refused, the fds closed anyway */
	dfd = dup(f2->irq_fd);
	assert_int_equal(vcma_reattach_fds(NULL, -1, 0, -1, dfd, NULL, 0), -EINVAL);
	assert_true(fd_closed(dfd));
	finish2(f1, f2, v, NULL);
}

/* $VCMA_REATTACH=0: no flag, no token, and the end of the connection is the end. A
 * host older than the reattach protocol refuses the flag (INVALID): the attach is made
 * again without it, with the same outcome. */
static void test_reattach_off(void **state)
{
	struct fake *f1 = fake_start(8, 8), *f2 = fake_next();
	struct host h = { .nsteps = 2 };
	struct vcma_sim_attach at;
	struct vcma_pool_info pi;
	struct vcma *v;
	int dfd;

	h.step[0] = (struct host_step){ .status = VCMA_ST_OK, .f = f1, .keep = true };
	h.step[1] = (struct host_step){ .kind = HOST_NONE, .restart = true, .accept_ms = 300 };
	host_start(&h);
	setenv("VCMA_REATTACH", "0", 1);
	v = host_attach(&h);
	unsetenv("VCMA_REATTACH");
	memcpy(&at, h.got[0], sizeof(at));
	assert_int_equal(h.got_len[0], sizeof(at));
	assert_int_equal(at.flags, 0);
	fake_set(f1, FAKE_SILENT);
	atomic_store(&h.go, 1);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	host_wait(&h);
	assert_int_equal(h.unexpected, 0);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	/* a socket handle reattaches by itself: vcma_reattach_fds() is not for it */
	dfd = dup(f2->irq_fd);
	assert_int_equal(vcma_reattach_fds(v, -1, 0, -1, dfd, NULL, 0), -EINVAL);
	assert_true(fd_closed(dfd));
	finish(f1, v);
	host_free(&h);

	memset(&h, 0, sizeof(h));
	h.nsteps = 3;
	h.step[0] = (struct host_step){ .status = VCMA_ST_INVALID };
	h.step[1] = (struct host_step){ .status = VCMA_ST_OK, .f = f2, .keep = true };
	h.step[2] = (struct host_step){ .kind = HOST_NONE, .restart = true, .accept_ms = 300 };
	host_start(&h);
	v = host_attach(&h);
	memcpy(&at, h.got[0], sizeof(at));
	assert_int_equal(at.flags, VCMA_SIM_F_REATTACH);
	memcpy(&at, h.got[1], sizeof(at));
	assert_int_equal(at.flags, 0);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), 0);
	fake_set(f2, FAKE_SILENT);
	atomic_store(&h.go, 1);
	assert_int_equal(vcma_query_pool(v, NULL, &pi), -ECONNRESET);
	host_wait(&h);
	assert_int_equal(h.unexpected, 0);
	finish(f2, v);
	host_free(&h);
}

/* ---- errors as text ---- */

static void test_strerror(void **state)
{
	static const int codes[] = {
		EINVAL, ERANGE, ENODEV, EACCES, EDQUOT, ENOSPC, E2BIG, EBUSY, ENOENT, ENOMEM, ENOBUFS,
		EPROTONOSUPPORT, ESHUTDOWN, ECONNRESET, ETIMEDOUT, EIO, EOPNOTSUPP, EAGAIN,
	};
	const size_t n = sizeof(codes) / sizeof(codes[0]);

	assert_string_equal(vcma_strerror(0), "success");
	assert_string_equal(vcma_strerror(-ERANGE), "below the pool's minimum request size: use normal memory");
	assert_string_equal(vcma_strerror(-ECONNRESET), "host cut this guest off or went away");
	for (size_t i = 0; i < n; i++) {
		const char *s = vcma_strerror(-(int)codes[i]);

		assert_non_null(s);
		assert_true(strlen(s) > 5);
		assert_string_equal(s, vcma_strerror((int)codes[i])); /* either sign */
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(s, vcma_strerror(-(int)codes[j]));
	}
	assert_non_null(vcma_strerror(-12345));
	assert_non_null(vcma_strerror(INT32_MIN + 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_ctrl_checks),
		cmocka_unit_test(test_alloc_free_query),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_status_errno),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_timeout_hello),
		cmocka_unit_test(test_unknown_id),
		cmocka_unit_test(test_rsp_overflow),
		cmocka_unit_test(test_malformed_alloc),
		cmocka_unit_test(test_dead),
		cmocka_unit_test(test_closing),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_async),
		cmocka_unit_test(test_mapper),
		cmocka_unit_test(test_wrap_and_kicks),
		cmocka_unit_test(test_lazy_free),
		cmocka_unit_test(test_spin),
		cmocka_unit_test(test_pacing),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_posted_order),
		cmocka_unit_test(test_posted_error),
		cmocka_unit_test(test_posted_detach),
		cmocka_unit_test(test_posted_ring_full),
		cmocka_unit_test(test_attach_socket),
		cmocka_unit_test(test_reattach),
		cmocka_unit_test(test_reattach_event_loop),
		cmocka_unit_test(test_reattach_refused),
		cmocka_unit_test(test_reattach_busy),
		cmocka_unit_test(test_reattach_grace),
		cmocka_unit_test(test_reattach_fds),
		cmocka_unit_test(test_reattach_off),
		cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
