/* SPDX-License-Identifier: MIT */
/*
 * fake_machine.h - what the daemon-level unit tests run vcmad's loop on: a stepped
 * clock and fake machine memory (an anonymous mapping; ordinary memory from a
 * memrange; zero() is counted, since lending releases host memory by zeroing).
 * test_daemon.c adds fake VM control on top, test_vmem.c a fake virtio-mem driver.
 */
#ifndef VCMA_TESTS_FAKE_MACHINE_H
#define VCMA_TESTS_FAKE_MACHINE_H

#include <stdint.h>

#include "backend/backend.h"

#define FAKE_PAGE 4096ull

/* The loop's clock (d.loop.clock = fake_clock); tests move fake_now_ns. */
extern uint64_t fake_now_ns;
uint64_t fake_clock(void);

/* Frames zero() was asked to zero since the test last reset it. */
extern uint64_t fake_zeroed_frames;
extern const struct vcmad_mem_ops fake_mem_ops;
/* Frame mfn of the fake machine memory, to write a VM's page as its vCPU would. */
uint8_t *fake_frame(const struct vcmad_backend *be, uint64_t mfn);

#endif
