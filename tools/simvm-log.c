// SPDX-License-Identifier: MIT
/*
 * simvm-log.c - what every part of vcma-simvm shares: its messages, the signal that
 * asks it to stop, and reading the attach socket (simvm-vm.h).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "simvm-vm.h"

volatile sig_atomic_t got_signal;

void on_signal(int sig)
{
	got_signal = sig;
}

void msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("vcma-simvm: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

int wait_readable(int fd, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int rc;

	do
		rc = poll(&pfd, 1, ms);
	while (rc < 0 && errno == EINTR && !got_signal);
	if (rc < 0)
		return -errno;
	return rc ? 0 : -ETIMEDOUT;
}

ssize_t sim_recv_rsp(int sock, struct vcma_sim_attach_rsp *rsp, int fds[4], int *got, bool *trunc)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = rsp, .iov_len = sizeof(*rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf) };
	ssize_t n;

	*got = 0;
	*trunc = false;
	memset(rsp, 0, sizeof(*rsp));
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*got < 4)
				fds[(*got)++] = fd;
			else
				close(fd);
		}
	}
	*trunc = mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC);
	return n;
}
