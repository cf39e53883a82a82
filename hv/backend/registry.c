// SPDX-License-Identifier: MIT
/*
 * registry.c - the backends built into this vcmad, by name ([daemon] backend).
 */
#include <string.h>

#include "backend/sim_backend.h"
#ifdef VCMA_HAVE_XEN
#include "backend/xen.h"
#endif

const struct vcmad_backend_type *const vcmad_backends[] = {
	&vcmad_backend_sim,
#ifdef VCMA_HAVE_XEN
	&vcmad_backend_xen,
#endif
	NULL,
};

const struct vcmad_backend_type *vcmad_backend_find(const char *name)
{
	for (size_t i = 0; vcmad_backends[i]; i++)
		if (!strcmp(vcmad_backends[i]->name, name))
			return vcmad_backends[i];
	return NULL;
}
