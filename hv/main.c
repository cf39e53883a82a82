// SPDX-License-Identifier: MIT
/*
 * main.c - vcmad's command line. Everything else is in daemon.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "backend/backend.h"
#include "daemon.h"

#ifndef VCMA_VERSION
#define VCMA_VERSION "unknown"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vcmad [OPTION]...\n"
		"The vcma host daemon: owns contiguous memory pools and serves guests' requests.\n"
		"\n"
		"  -c, --config FILE        configuration file (default " VCMAD_DEFAULT_CONFIG ")\n"
		"  -r, --runtime-dir DIR    directory for sockets (default from the config, else " VCMAD_DEFAULT_RUNTIME_DIR ")\n"
		"  -s, --state-dir DIR      where ownership is recorded (default from the config, else\n"
		"                           " VCMAD_DEFAULT_STATE_DIR ", or RUNTIME_DIR/state with --runtime-dir); none: nowhere\n"
		"  -p, --pool-size NAME=SIZE  override a pool's size (256M, 10%%, min(256M,10%%), max(...))\n"
		"  -t, --check-config       parse the configuration, lay out the pools, print them and exit\n"
		"  -v, --verbose            log debug messages\n"
		"  -h, --help               show this help and exit\n"
		"  -V, --version            show the version and exit\n"
		"\n"
		"Exit status: 0 clean shutdown, 1 runtime failure, 2 bad usage or configuration.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "runtime-dir", required_argument, NULL, 'r' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "pool-size", required_argument, NULL, 'p' },
		{ "check-config", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = VCMAD_DEFAULT_CONFIG, *runtime_dir = NULL, *state_dir = NULL;
	const char *overrides[VCMA_MAX_POOLS];
	unsigned int noverrides = 0;
	bool check = false;
	struct vcmad_conf conf;
	static struct vcmad d;
	char err[512];
	int c, rc;

	vcma_log_init(LOG_INFO);
	while ((c = getopt_long(argc, argv, "c:r:s:p:tvhV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'r': runtime_dir = optarg; break;
		case 's': state_dir = optarg; break;
		case 'p':
			if (noverrides == VCMA_MAX_POOLS) {
				fprintf(stderr, "vcmad: too many --pool-size options\n");
				return 2;
			}
			overrides[noverrides++] = optarg;
			break;
		case 't': check = true; break;
		case 'v': vcma_log_init(LOG_DEBUG); break;
		case 'h': usage(stdout); return 0;
		case 'V':
			printf("vcmad %s\nbackends:", VCMA_VERSION);
			for (size_t i = 0; vcmad_backends[i]; i++)
				printf(" %s", vcmad_backends[i]->name);
#ifdef VCMA_HAVE_LIBVIRT
			printf("\nlibvirt: yes\n");
#else
			printf("\nlibvirt: no (built without libvirt-dev)\n");
#endif
			return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "vcmad: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	vcmad_conf_defaults(&conf);
	if (vcmad_conf_load(&conf, config, err, sizeof(err))) {
		fprintf(stderr, "vcmad: %s\n", err);
		return 2;
	}
	for (unsigned int i = 0; i < noverrides; i++)
		if (vcmad_conf_override_pool_size(&conf, overrides[i], err, sizeof(err))) {
			fprintf(stderr, "vcmad: %s\n", err);
			return 2;
		}
	if (runtime_dir) {
		if (runtime_dir[0] != '/' || strlen(runtime_dir) >= sizeof(conf.runtime_dir) - 32) {
			fprintf(stderr, "vcmad: --runtime-dir: expected an absolute path shorter than 224 characters\n");
			return 2;
		}
		snprintf(conf.runtime_dir, sizeof(conf.runtime_dir), "%s", runtime_dir);
	}
	if (state_dir) {
		if ((state_dir[0] != '/' && strcmp(state_dir, "none")) || strlen(state_dir) >= sizeof(conf.state_dir) - 32) {
			fprintf(stderr, "vcmad: --state-dir: expected an absolute path shorter than 224 characters, or none\n");
			return 2;
		}
		snprintf(conf.state_dir, sizeof(conf.state_dir), "%s", state_dir);
	}
	if (check) {
		const struct vcmad_backend_type *bt = vcmad_backend_find(conf.backend);

		if (bt && bt->mem->probe) {
			/* a hypervisor's memory is not touched to check a file (Xen: no holder) */
			if (vcmad_conf_validate(&conf, err, sizeof(err))) {
				fprintf(stderr, "vcmad: %s\n", err);
				return 2;
			}
			printf("configuration %s is valid: %u pool(s), backend %s (not contacted), %u Xen guest(s)\n",
			       config, conf.npools, bt->name, vcmad_conf_count_guests(&conf, VCMAD_GUEST_XEN));
			return 0;
		}
	}
	rc = vcmad_init(&d, &conf);
	if (rc)
		return 2;
	if (check) {
		printf("configuration %s is valid: %u pool(s), %llu MiB machine memory, %u QEMU guest(s)\n", config,
		       d.core.npools, (unsigned long long)(conf.machine_bytes >> 20), vcmad_conf_count_guests(&conf, VCMAD_GUEST_QEMU));
		vcmad_fini(&d);
		return 0;
	}
	rc = vcmad_start(&d);
	if (!rc)
		rc = vcmad_run(&d);
	vcmad_fini(&d);
	if (rc)
		log_err("stopped: %s", strerror(-rc));
	else
		log_notice("stopped cleanly");
	return rc ? 1 : 0;
}
