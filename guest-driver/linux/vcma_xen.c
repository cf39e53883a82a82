// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_xen.c - vcma.ko's Xen transport: the frontend of the split device "vcma",
 * whose backend is vcmad in a privileged domain (PROTOCOL.md 9.3).
 *
 * Handshake: when the backend reaches InitWait the frontend reads area-pages (P)
 * once, grants P zeroed pages to it, allocates an event channel for it, publishes
 * ring-ref0..P-1 and event-channel in one transaction and goes Initialised; when the
 * backend is Connected it checks the control page (2.5), says HELLO and goes
 * Connected. The check and HELLO run in a work item, so that the xenbus watch thread
 * never waits on vcmad. A kick and an irq are the one event channel.
 *
 * Each connection is a struct vcma_dev of its own: a backend that goes Closing or
 * Closed, or whose directory disappears, ends it as DEAD would (every call fails,
 * regions become husks: vcmad frees them as it detaches, and their frames stay this
 * domain's until the holders let go), and the frontend closes. A backend that comes
 * back to InitWait gets a new connection. Removal closes the same way, waiting a
 * little for the backend to let go of the area first.
 *
 * Only PV guests: a translated guest (PVH, HVM) has no machine addresses to give a
 * device, and vcmad refuses it too (9.3.1).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#include <xen/events.h>
#include <xen/grant_table.h>
#include <xen/page.h>
#include <xen/xen.h>
#include <xen/xenbus.h>

#include "vcma.h"
#include "vcma_xen.h"

#define CLOSE_WAIT_MS 5000 /* removal: how long the backend gets to unmap the area */
#define PUBLISH_TRIES 16   /* xenstore transactions ended by -EAGAIN before giving up */

/* One connection: from the backend's InitWait to the close. */
struct vcma_xen_conn {
	struct vcma_dev vdev;
	unsigned int npages;       /* P */
	grant_ref_t grefs[VCMA_XEN_MAX_AREA_PAGES];
	evtchn_port_t port;
	int irq;                   /* 0 when not bound */
};

/* One xenbus device "vcma". */
struct vcma_xen_front {
	struct xenbus_device *xbdev;
	struct mutex lock;         /* connecting, attaching and disconnecting */
	spinlock_t conn_lock;      /* conn and closing, for failing a call from outside lock */
	struct vcma_xen_conn *conn;
	bool closing;              /* the connection is ending: its failures are no news */
	bool attached;             /* HELLO answered, Connected */
	struct work_struct attach_work;
};

static struct vcma_xen_conn *to_conn(struct vcma_dev *dev)
{
	return container_of(dev, struct vcma_xen_conn, vdev);
}

/* ---- the transport ---- */

static void xen_kick(struct vcma_dev *dev)
{
	struct vcma_xen_conn *conn = to_conn(dev);

	if (conn->irq > 0)
		notify_remote_via_irq(conn->irq);
}

/* Every connection is a fresh area: the backend stored READY before it went Connected
 * (9.3 step 3), and this side says HELLO; there is no ring to take over. */
static int xen_check_layout(struct vcma_dev *dev)
{
	u32 st = smp_load_acquire(&((struct vcma_ctrl *)dev->shm)->state);

	if (st != VCMA_STATE_READY) {
		dev_err(dev->dev, "the backend is Connected but its area is in state %u, not READY\n", st);
		return -ENODEV;
	}
	return 0;
}

static int xen_region_map_dma(struct vcma_region *r, struct device *dma_dev, enum dma_data_direction dir,
			      dma_addr_t *addr)
{
	/* a PV guest's devices use machine addresses, and the region is machine-contiguous */
	*addr = r->dma_addr;
	return 0;
}

/* The last reference: whatever the close did not take down (a failed set-up). */
static void xen_release(struct vcma_dev *dev)
{
	struct vcma_xen_conn *conn = to_conn(dev);

	if (conn->irq > 0)
		unbind_from_irqhandler(conn->irq, dev);
	xenbus_teardown_ring(&dev->shm, conn->npages, conn->grefs);
	kfree(conn);
}

static const struct vcma_transport vcma_xen_transport = {
	.kick = xen_kick,
	.check_layout = xen_check_layout,
	.region_install = vcma_xen_region_install,
	.region_unmap = vcma_xen_region_unmap,
	.region_release = vcma_xen_region_release,
	.region_mmap = vcma_xen_region_mmap,
	.region_map_dma = xen_region_map_dma,
	.release = xen_release,
};

static irqreturn_t vcma_xen_irq(int irq, void *data)
{
	/* late EOI: a backend that raises events for nothing gets them slowed down */
	xen_irq_lateeoi(irq, vcma_ring_poll(data) ? 0 : XEN_EOI_FLAG_SPURIOUS);
	return IRQ_HANDLED;
}

/* ---- connecting ---- */

/* ring-ref0..P-1 and event-channel, in one transaction (9.3 step 2). */
static int publish(struct xenbus_device *xbdev, struct vcma_xen_conn *conn)
{
	char key[sizeof(VCMA_XEN_KEY_RING_REF) + VCMA_XEN_MAX_DECIMAL];
	struct xenbus_transaction xbt;
	unsigned int i, tries = 0;
	int err;

again:
	err = xenbus_transaction_start(&xbt);
	if (err)
		return err;
	for (i = 0; i < conn->npages && !err; i++) {
		snprintf(key, sizeof(key), VCMA_XEN_KEY_RING_REF "%u", i);
		err = xenbus_printf(xbt, xbdev->nodename, key, "%u", conn->grefs[i]);
	}
	if (!err)
		err = xenbus_printf(xbt, xbdev->nodename, VCMA_XEN_KEY_EVTCHN, "%u", conn->port);
	if (err) {
		xenbus_transaction_end(xbt, 1);
		return err;
	}
	err = xenbus_transaction_end(xbt, 0);
	if (err == -EAGAIN && ++tries < PUBLISH_TRIES)
		goto again;
	return err;
}

/* area-pages, read once: 1..16 in the strict decimal of 9.3. */
static int read_area_pages(struct xenbus_device *xbdev, unsigned int *npages)
{
	unsigned int len;
	char *val;
	int err = 0;

	val = xenbus_read(XBT_NIL, xbdev->otherend, VCMA_XEN_KEY_AREA_PAGES, &len);
	if (IS_ERR(val))
		return PTR_ERR(val);
	if (vcma_xen_parse_u32(val, len, VCMA_XEN_MAX_AREA_PAGES, npages) || !*npages) {
		dev_err(&xbdev->dev, "backend's %s is \"%*pE\", not 1..%u\n", VCMA_XEN_KEY_AREA_PAGES,
			(int)min(len, 32u), val, VCMA_XEN_MAX_AREA_PAGES);
		err = -EINVAL;
	}
	kfree(val);
	return err;
}

/*
 * The backend is in InitWait: share the area and the event channel, go Initialised.
 * Under front->lock, with no connection. A failure says why in xenstore and closes.
 */
static void front_connect(struct vcma_xen_front *front)
{
	struct xenbus_device *xbdev = front->xbdev;
	struct vcma_xen_conn *conn;
	unsigned int npages, i;
	const char *what;
	int err;

	what = "reading area-pages";
	err = read_area_pages(xbdev, &npages);
	if (err)
		goto fatal;
	what = "allocating the connection";
	err = -ENOMEM;
	conn = kzalloc(sizeof(*conn), GFP_KERNEL);
	if (!conn)
		goto fatal;
	vcma_dev_init(&conn->vdev, &vcma_xen_transport, &xbdev->dev);
	conn->npages = npages;
	for (i = 0; i < ARRAY_SIZE(conn->grefs); i++)
		conn->grefs[i] = INVALID_GRANT_REF;
	what = "granting the shared area";
	err = xenbus_setup_ring(xbdev, GFP_KERNEL, &conn->vdev.shm, npages, conn->grefs);
	if (err)
		goto fail;
	conn->vdev.shm_len = (u64)npages * XEN_PAGE_SIZE;
	what = "allocating an event channel";
	err = xenbus_alloc_evtchn(xbdev, &conn->port);
	if (err)
		goto fail;
	what = "binding the event channel";
	err = bind_evtchn_to_irqhandler_lateeoi(conn->port, vcma_xen_irq, 0, KBUILD_MODNAME, &conn->vdev);
	if (err < 0) {
		xenbus_free_evtchn(xbdev, conn->port);
		goto fail;
	}
	conn->irq = err; /* unbinding closes the port too */
	what = "publishing ring-ref and event-channel";
	err = publish(xbdev, conn);
	if (err)
		goto fail;
	spin_lock(&front->conn_lock);
	front->conn = conn;
	front->closing = false;
	spin_unlock(&front->conn_lock);
	xenbus_switch_state(xbdev, XenbusStateInitialised);
	/* a backend that went Connected before it saw this is not missed */
	if (xenbus_read_driver_state(xbdev->otherend) == XenbusStateConnected)
		queue_work(system_long_wq, &front->attach_work);
	return;
fail:
	vcma_dev_put(&conn->vdev); /* nothing was published: the backend maps nothing */
fatal:
	xenbus_dev_fatal(xbdev, err, "%s", what); /* and Closing */
}

/* Fail every call on the connection, from outside front->lock (a HELLO may wait there). */
static void front_fail(struct vcma_xen_front *front, int err)
{
	struct vcma_dev *dev = NULL;

	spin_lock(&front->conn_lock);
	front->closing = true;
	if (front->conn) {
		dev = &front->conn->vdev;
		kref_get(&dev->ref);
	}
	spin_unlock(&front->conn_lock);
	if (dev) {
		vcma_ring_fail(dev, err);
		vcma_dev_put(dev);
	}
}

/*
 * End the connection, under front->lock: every call fails with err from now on, the
 * regions become husks (user mappings revoked; the backend frees them as it
 * detaches; the kernel's mappings go when their holders let go), the event channel
 * is closed and the grants ended (a page the backend still maps is kept until it
 * unmaps it).
 */
static void front_disconnect(struct vcma_xen_front *front, int err)
{
	struct vcma_xen_conn *conn = front->conn;
	struct vcma_dev *dev;

	if (!conn)
		return;
	dev = &conn->vdev;
	spin_lock(&front->conn_lock);
	front->conn = NULL;
	spin_unlock(&front->conn_lock);
	front->attached = false;
	vcma_misc_deregister(dev);
	vcma_ring_fail(dev, err);
	vcma_dev_shutdown(dev, false, err);
	/* the irq handler finds nothing once gone is set */
	unbind_from_irqhandler(conn->irq, dev);
	conn->irq = 0;
	cancel_work_sync(&dev->free_work);
	xenbus_teardown_ring(&dev->shm, conn->npages, conn->grefs);
	vcma_dev_put(dev);
}

/* The backend is Connected: check the control page, HELLO, go Connected (9.3 step 4). */
static void front_attach_work(struct work_struct *w)
{
	struct vcma_xen_front *front = container_of(w, struct vcma_xen_front, attach_work);
	struct xenbus_device *xbdev = front->xbdev;
	struct vcma_xen_conn *conn;
	struct vcma_dev *dev;
	bool closing;
	int err;

	mutex_lock(&front->lock);
	conn = front->conn;
	if (!conn || front->attached || xbdev->state != XenbusStateInitialised ||
	    xenbus_read_driver_state(xbdev->otherend) != XenbusStateConnected)
		goto out;
	dev = &conn->vdev;
	err = vcma_ring_attach(dev);
	if (!err)
		err = vcma_misc_register(dev);
	if (err) {
		spin_lock(&front->conn_lock);
		closing = front->closing;
		spin_unlock(&front->conn_lock);
		front_disconnect(front, -ENODEV);
		if (!closing) { /* else the backend's close or removal made it fail: no news */
			dev_err(&xbdev->dev, "cannot attach to vcmad: %d\n", err);
			xenbus_dev_fatal(xbdev, err, "attaching to vcmad's ring"); /* and Closing */
		}
		goto out;
	}
	front->attached = true;
	xenbus_switch_state(xbdev, XenbusStateConnected);
	dev_info(&xbdev->dev, "vcma guest %u: %u-page area shared with domain %u, features %#llx\n",
		 dev->ctrl.guest_id, conn->npages, xbdev->otherend_id, dev->features);
out:
	mutex_unlock(&front->lock);
}

/* What the backend wrote into its error node, if anything (it closes after). */
static void log_backend_error(struct xenbus_device *xbdev)
{
	unsigned int len;
	char *val;

	val = xenbus_read(XBT_NIL, xbdev->otherend, VCMA_XEN_KEY_ERROR, &len);
	if (IS_ERR(val))
		return;
	dev_err(&xbdev->dev, "backend says: %*pE\n", (int)min(len, 256u), val);
	kfree(val);
}

/*
 * The backend is closing, closed or gone: end the connection as DEAD would, and close
 * (5, then 6: the other side is at 5 or 6 already, or gone). A backend that is Closed
 * before this side shared anything leaves it Initialising, ready for an InitWait.
 */
static void front_close(struct vcma_xen_front *front, enum xenbus_state backend)
{
	struct xenbus_device *xbdev = front->xbdev;
	bool had_conn;

	front_fail(front, -ECONNRESET);
	mutex_lock(&front->lock);
	had_conn = front->conn;
	if (had_conn) {
		dev_warn(&xbdev->dev, "backend closed the connection: every call fails, regions are husks\n");
		front_disconnect(front, -ECONNRESET);
	}
	mutex_unlock(&front->lock);
	if (xbdev->state == XenbusStateClosed)
		return;
	if (backend != XenbusStateUnknown)
		log_backend_error(xbdev);
	if (!had_conn && xbdev->state == XenbusStateInitialising && backend != XenbusStateClosing)
		return;
	xenbus_switch_state(xbdev, XenbusStateClosing);
	xenbus_switch_state(xbdev, XenbusStateClosed);
}

static void vcma_xen_backend_changed(struct xenbus_device *xbdev, enum xenbus_state state)
{
	struct vcma_xen_front *front = dev_get_drvdata(&xbdev->dev);

	switch (state) {
	case XenbusStateInitWait:
		if (xbdev->state != XenbusStateInitialising && xbdev->state != XenbusStateClosed) {
			dev_warn(&xbdev->dev, "backend back in InitWait while this side is %s: ignored\n",
				 xenbus_strstate(xbdev->state));
			break;
		}
		mutex_lock(&front->lock);
		front_disconnect(front, -ECONNRESET); /* one left from before a resume */
		front_connect(front);
		mutex_unlock(&front->lock);
		break;
	case XenbusStateConnected:
		if (xbdev->state == XenbusStateInitialised)
			queue_work(system_long_wq, &front->attach_work);
		break;
	case XenbusStateClosing:
	case XenbusStateClosed:
	case XenbusStateUnknown: /* its directory is gone */
		front_close(front, state);
		break;
	default:
		break;
	}
}

static int vcma_xen_probe(struct xenbus_device *xbdev, const struct xenbus_device_id *id)
{
	struct vcma_xen_front *front;

	if (!xen_pv_domain()) {
		pr_err("PVH/HVM guest: Xen gives translated guests no machine addresses; vcma needs a PV guest\n");
		return -ENODEV;
	}
	front = kzalloc(sizeof(*front), GFP_KERNEL);
	if (!front)
		return -ENOMEM;
	front->xbdev = xbdev;
	mutex_init(&front->lock);
	spin_lock_init(&front->conn_lock);
	INIT_WORK(&front->attach_work, front_attach_work);
	dev_set_drvdata(&xbdev->dev, front);
	/* bound again after a close: say so, as Linux's backends expect before they
	 * offer a new connection (InitWait) */
	if (xenbus_read_driver_state(xbdev->nodename) != XenbusStateInitialising) {
		xbdev->state = XenbusStateUnknown; /* the cache may say Initialising already */
		xenbus_switch_state(xbdev, XenbusStateInitialising);
	}
	/* the backend's state watch, set up after this returns, fires at once */
	return 0;
}

/* Closing, and a little time for the backend to detach and unmap the area. */
static void wait_backend_closed(struct xenbus_device *xbdev, bool shared)
{
	enum xenbus_state st;
	unsigned int ms;

	if (xbdev->state == XenbusStateClosed)
		return;
	xenbus_switch_state(xbdev, XenbusStateClosing);
	for (ms = 0; shared && ms < CLOSE_WAIT_MS; ms += 100) {
		st = xenbus_read_driver_state(xbdev->otherend);
		if (st == XenbusStateClosed || st == XenbusStateUnknown)
			return;
		msleep(100); /* the watch on the backend is gone by now */
	}
	dev_warn(&xbdev->dev, "backend did not close within %u ms\n", CLOSE_WAIT_MS);
}

/*
 * Unbind, or the device went away: the regions become husks at once, the backend
 * gets a little time to detach and unmap the area, then the connection goes. The
 * xenbus core writes Closed after this returns.
 */
static void vcma_xen_remove(struct xenbus_device *xbdev)
{
	struct vcma_xen_front *front = dev_get_drvdata(&xbdev->dev);
	bool shared;

	front_fail(front, -ENODEV); /* a HELLO under way returns at once */
	cancel_work_sync(&front->attach_work);
	mutex_lock(&front->lock);
	shared = front->conn;
	if (shared) {
		vcma_misc_deregister(&front->conn->vdev);
		vcma_dev_shutdown(&front->conn->vdev, false, -ENODEV);
	}
	mutex_unlock(&front->lock);
	wait_backend_closed(xbdev, shared);
	mutex_lock(&front->lock);
	front_disconnect(front, -ENODEV);
	mutex_unlock(&front->lock);
	dev_set_drvdata(&xbdev->dev, NULL);
	kfree(front);
}

static const struct xenbus_device_id vcma_xen_ids[] = {
	{ VCMA_XEN_DEVICE_TYPE },
	{ "" }
};

static struct xenbus_driver vcma_xen_driver = {
	.name = KBUILD_MODNAME,
	.ids = vcma_xen_ids,
	.not_essential = true, /* boot never waits for vcmad */
	.probe = vcma_xen_probe,
	.remove = vcma_xen_remove,
	.otherend_changed = vcma_xen_backend_changed,
};

/*
 * Registering a frontend from a module waits (up to 30 s for a driver that is not
 * essential) until its devices connect: that wait runs here, not in insmod.
 */
static bool vcma_xen_registered;

static void vcma_xen_register_work(struct work_struct *w)
{
	int err = xenbus_register_frontend(&vcma_xen_driver);

	if (err)
		pr_err("cannot register the xenbus frontend \"%s\": %d\n", VCMA_XEN_DEVICE_TYPE, err);
	vcma_xen_registered = !err;
}

static DECLARE_WORK(vcma_xen_register_w, vcma_xen_register_work);

int vcma_xen_register(void)
{
	if (xen_domain())
		queue_work(system_long_wq, &vcma_xen_register_w);
	return 0;
}

void vcma_xen_unregister(void)
{
	if (!xen_domain())
		return;
	flush_work(&vcma_xen_register_w);
	if (vcma_xen_registered)
		xenbus_unregister_driver(&vcma_xen_driver);
}

MODULE_ALIAS("xen:" VCMA_XEN_DEVICE_TYPE);
