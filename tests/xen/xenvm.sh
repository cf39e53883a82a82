# Shell helpers for a dom0 script run by tests/xen/xenvm.py (busybox sh). The script is
# sourced after this file, in /mnt/host; xenvm.py's docstring lists the functions too.
# Each one says on stderr what went wrong and returns non-zero when it fails.

# Centiseconds since dom0 booted.
_xen_now() {
	read -r _xen_up _xen_rest </proc/uptime
	echo $(( ${_xen_up%.*} * 100 + 1${_xen_up#*.} - 100 ))
}

# xen_poll SECS CMD...: run CMD until it succeeds; 1 if it has not within SECS seconds.
# A poll of an observable condition with a deadline (every 50 ms), never a wait for a while.
xen_poll() {
	_xen_end=$(( $(_xen_now) + $1 * 100 ))
	shift
	until "$@" >/dev/null 2>&1; do
		if [ "$(_xen_now)" -ge "$_xen_end" ]; then
			echo "xen_poll: still failing after the deadline: $*" >&2
			return 1
		fi
		sleep 0.05
	done
}

# xen_fact KEY VALUE...: record a fact for the host test (XenResult.facts[KEY]).
xen_fact() {
	_xen_k=$1
	shift
	echo "$_xen_k $*" >>"$XENVM_OUT/facts"
}

# A domU's kernel command line before xen_create's EXTRA. loglevel=5: warnings reach the
# console log. Under TCG a PV guest spends seconds calibrating its TSC against a PIT it
# does not have (each port access traps to Xen), and most of a second in the crypto
# self-tests: tsc_early_khz gives it the frequency Xen measured, cryptomgr.notests skips
# them (about 2.5 s of a 10 s boot).
XENVM_DOMU_CMDLINE="console=hvc0 rdinit=/init quiet loglevel=5 cryptomgr.notests"
_xen_khz=$(xl info 2>/dev/null | awk '$1 == "cpu_mhz" { split($3, f, "."); print f[1] substr(f[2] "000", 1, 3) }')
[ -n "$_xen_khz" ] && XENVM_DOMU_CMDLINE="$XENVM_DOMU_CMDLINE tsc_early_khz=$_xen_khz"

# xen_create [-i IMAGE] [-k KERNEL] [-x 'key = value']... NAME MEMORY [MAXMEM [EXTRA]]
# xl create a PV domU named NAME with MEMORY MiB (maxmem MAXMEM, default MEMORY); EXTRA
# is appended to its kernel command line. IMAGE defaults to the image XenRun.domU_image
# built under NAME, KERNEL to Debian's kernel. The config is left in /run/xenvm/NAME.cfg.
xen_create() {
	_xen_img= _xen_kern=$XENVM_KERNEL _xen_more=
	OPTIND=1
	while getopts i:k:x: _xen_o; do
		case $_xen_o in
		i) _xen_img=$OPTARG ;;
		k) _xen_kern=$OPTARG ;;
		x) _xen_more="$_xen_more$OPTARG
" ;;
		*) echo "xen_create: usage: xen_create [-i IMAGE] [-k KERNEL] [-x LINE]... NAME MEMORY [MAXMEM [EXTRA]]" >&2
		   return 2 ;;
		esac
	done
	shift $((OPTIND - 1))
	if [ $# -lt 2 ]; then
		echo "xen_create: NAME and MEMORY are needed" >&2
		return 2
	fi
	_xen_img=$(_xen_local "${_xen_img:-$XENVM_DOMU/$1.cpio.gz}") || return 1
	_xen_kern=$(_xen_local "$_xen_kern") || return 1
	mkdir -p /run/xenvm
	cat >/run/xenvm/"$1".cfg <<EOF
name = "$1"
type = "pv"
kernel = "$_xen_kern"
ramdisk = "$_xen_img"
extra = "$XENVM_DOMU_CMDLINE ${4:-}"
memory = $2
maxmem = ${3:-$2}
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "destroy"
$_xen_more
EOF
	# a domain created again under a name has its console appended to the same log:
	# what it printed starts here
	if [ -e /var/log/xen/console/guest-"$1".log ]; then
		wc -c </var/log/xen/console/guest-"$1".log >/run/xenvm/"$1".console-start
	else
		echo 0 >/run/xenvm/"$1".console-start
	fi
	if ! xl create /run/xenvm/"$1".cfg >/run/xenvm/"$1".create.log 2>&1; then
		echo "xen_create: xl create $1 failed:" >&2
		cat /run/xenvm/"$1".create.log >&2
		return 1
	fi
}

# _xen_local PATH: PATH, or for a file on the 9p share its copy in /run/xenvm/local
# (made once). libxenguest mmaps the kernel and the ramdisk, and every page fault on a
# 9p file is a round trip to the host: reading Debian's vmlinux that way takes 30 s
# under TCG, copying it first well under one.
_xen_local() {
	case $1 in
	/mnt/host/*) ;;
	*) echo "$1"; return 0 ;;
	esac
	_xen_copy=/run/xenvm/local/$(echo "${1#/mnt/host/}" | tr / _)
	if [ ! -e "$_xen_copy" ]; then
		mkdir -p /run/xenvm/local
		if ! cp "$1" "$_xen_copy.part" || ! mv "$_xen_copy.part" "$_xen_copy"; then
			echo "xen_create: cannot copy $1 to dom0's /run" >&2
			rm -f "$_xen_copy.part"
			return 1
		fi
	fi
	echo "$_xen_copy"
}

# xen_domid NAME: print NAME's domain id.
xen_domid() {
	xl domid "$1"
}

# xen_mem_mib NAME: NAME's memory in MiB as `xl list` shows it (from Xen's tot_pages).
xen_mem_mib() {
	xl list "$1" | awk 'NR == 2 { print $3 }'
}

# xen_console NAME: what the domain xen_create made last under NAME printed on its
# console so far (xenconsoled's log of NAME holds every domain of that name).
xen_console() {
	tail -c +$(( $(cat /run/xenvm/"$1".console-start 2>/dev/null || echo 0) + 1 )) \
		/var/log/xen/console/guest-"$1".log 2>/dev/null
}

# xen_wait_console NAME REGEX [SECS]: wait (default 60 s) until NAME's console (as
# xen_console shows it) has a line matching the extended regular expression REGEX.
xen_wait_console() {
	if ! xen_poll "${3:-60}" _xen_console_has "$1" "$2"; then
		echo "xen_wait_console: no line matching '$2' on $1's console within ${3:-60} s; it says:" >&2
		xen_console "$1" | tail -n 20 >&2
		return 1
	fi
}

_xen_console_has() {
	xen_console "$1" | grep -Eq -e "$2"
}

# xen_destroy NAME: xl destroy NAME and wait until Xen no longer lists it.
xen_destroy() {
	if ! xl destroy "$1"; then
		echo "xen_destroy: xl destroy $1 failed" >&2
		return 1
	fi
	if ! xen_poll 30 _xen_gone "$1"; then
		echo "xen_destroy: $1 still listed 30 s after xl destroy" >&2
		return 1
	fi
}

_xen_gone() {
	! xl domid "$1" >/dev/null 2>&1
}
