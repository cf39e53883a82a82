/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * vcma_xen.h - the Xen split device "vcma" (PROTOCOL.md 9.3): xenstore names and
 * limits shared by vcmad's xenbus link (the backend) and vcma.ko (the frontend).
 *
 *   /local/domain/D/device/vcma/N/      frontend: backend, backend-id, state,
 *                                       ring-ref0.., event-channel
 *   /local/domain/B/backend/vcma/D/N/   backend: frontend, frontend-id, online, state,
 *                                       area-pages, error
 */
#ifndef VCMA_XEN_H
#define VCMA_XEN_H

#define VCMA_XEN_DEVICE_TYPE "vcma"
#define VCMA_XEN_MAX_AREA_PAGES 32u /* area-pages: 1..32 (1024 request slots need 19) */

#define VCMA_XEN_KEY_AREA_PAGES "area-pages"
#define VCMA_XEN_KEY_RING_REF "ring-ref"     /* + decimal page index */
#define VCMA_XEN_KEY_EVTCHN "event-channel"
#define VCMA_XEN_KEY_ERROR "error"

/* Largest extent order vcmad populates (2^18 pages = 1 GiB): Xen's cap for a control
 * domain on x86 (memop-max-order), and the protocol's alignment limit. */
#define VCMA_XEN_MAX_ORDER 18u

/* The longest decimal a node holds (a u32), without the NUL. */
#define VCMA_XEN_MAX_DECIMAL 10u

/* Parse a node's value: 1-10 decimal digits, no sign, no leading zero (except "0"),
 * no blanks, value <= max. Returns 0 and *out, or -1. len is the value's length
 * (xenstore values are not NUL-terminated on the wire). */
static inline int vcma_xen_parse_u32(const char *s, unsigned int len, unsigned long max, unsigned int *out)
{
	unsigned long v = 0;
	unsigned int i;

	if (!s || len == 0 || len > VCMA_XEN_MAX_DECIMAL || (len > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max || v > 0xffffffffUL)
		return -1;
	*out = (unsigned int)v;
	return 0;
}

#endif
