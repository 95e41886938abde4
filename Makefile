# SPDX-License-Identifier: MIT
# baton - zero-downtime socket handoff supervisor. See README.md.

VERSION	:= 0.1.0
PREFIX	?= /usr/local
DESTDIR	?=
BINDIR	?= $(PREFIX)/bin
MANDIR	?= $(PREFIX)/share/man
# Debian's multiarch directory where dpkg-architecture says which one (in ld.so's and
# pkg-config's search path under /usr and /usr/local alike), else PREFIX/lib.
MULTIARCH := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)
LIBDIR	?= $(PREFIX)/lib$(if $(MULTIARCH),/$(MULTIARCH))
# The preload shim: private to batond, which finds it at BINDIR/../lib/baton at run time too,
# so that an install at another PREFIX than the build's still finds its own shim.
PKGLIBDIR ?= $(PREFIX)/lib/baton
INCLUDEDIR ?= $(PREFIX)/include
# systemd looks for units in /usr/local/lib/systemd/system too: the shipped ones work as installed.
UNITDIR	?= $(PREFIX)/lib/systemd/system
EXAMPLEDIR ?= $(PREFIX)/share/doc/baton/examples

CC	?= gcc
PKG_CONFIG ?= pkg-config
PYTHON	?= python3

ifeq ($(SANITIZE),1)
BUILD	?= build/san
SAN	:= -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT	:= -O1 -g
else
BUILD	?= build
SAN	:=
OPT	:= -O2 -g -D_FORTIFY_SOURCE=2
endif

WARN	:= -Wall -Wextra -Wshadow -Wformat=2 -Wformat-security -Wstrict-prototypes \
	   -Wmissing-prototypes -Wold-style-definition -Wpointer-arith -Wundef \
	   -Wimplicit-fallthrough -Wvla -Wcast-align -Wwrite-strings -Werror
CFLAGS	?= $(OPT)
# Packagers' flags (dpkg-buildflags: fortify in CPPFLAGS, relro and now in LDFLAGS) reach every
# installed binary.
CPPFLAGS ?=
LDFLAGS	?=
ALL_CFLAGS := -std=c17 -D_GNU_SOURCE -DBATON_VERSION='"$(VERSION)"' -DBATON_LIBDIR='"$(PKGLIBDIR)"' $(WARN) $(SAN) \
	   -fstack-protector-strong -fPIC -Icommon -Iproto $(CPPFLAGS) $(CFLAGS)
LDLIBS_SD   = $(shell $(PKG_CONFIG) --libs libsystemd 2>/dev/null)
CFLAGS_SD   = $(shell $(PKG_CONFIG) --cflags libsystemd 2>/dev/null)
LDLIBS_CHK  = $(shell $(PKG_CONFIG) --libs check 2>/dev/null)
CFLAGS_CHK  = $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)

PROTO_SRC	:= proto/fdpass.c proto/proto.c
COMMON_SRC	:= common/duration.c common/json.c common/listen_close.c common/sockaddr.c
# Every supervisor/ module but the two programs' own main files: a new room needs no edit here.
SUPERVISOR_LIB	:= $(filter-out supervisor/main.c supervisor/ctl.c,$(sort $(wildcard supervisor/*.c)))
UNIT_SRC	:= $(sort $(wildcard tests/unit/*.c))

PROGRAMS := $(BUILD)/batond $(BUILD)/batonctl $(BUILD)/example-httpd $(BUILD)/loadgen $(BUILD)/libbaton-preload.so \
	    $(BUILD)/libbaton.so $(BUILD)/libbaton.a $(BUILD)/static-server
UNIT_BIN := $(BUILD)/unit-tests

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

.PHONY: deb soak all deps check check-run unit integration lint analyze demo demo-run bench bench-run fuzz \
	fuzz-deps fuzz-build fuzz-smoke \
	install uninstall clean format

# Builds only; check, demo and bench install missing packages first (deps).
all: programs

# A fresh Debian machine needs nothing but these targets: missing packages are installed first.
deps:
	@{ $(PKG_CONFIG) --exists libsystemd check && command -v clang-format-14 && \
	   command -v $(PYTHON) && command -v $(CC) && command -v nginx && command -v systemd-nspawn && \
	   command -v lighttpd && command -v gunicorn && command -v prometheus && command -v curl && \
	   command -v caddy && command -v node && command -v haproxy && command -v apache2 && \
	   command -v uwsgi && command -v puma && command -v redis-server && command -v memcached && \
	   command -v podman && command -v runc && command -v dh && command -v dpkg-buildpackage && \
	   command -v lintian && command -v valgrind && \
	   command -v clang-14; } >/dev/null 2>&1 || scripts/install-deps

programs: $(PROGRAMS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CFLAGS_SD) $(CFLAGS_CHK) -Isupervisor -MMD -MP -c $< -o $@

$(BUILD)/batond: $(call obj,supervisor/main.c $(SUPERVISOR_LIB) $(PROTO_SRC) $(COMMON_SRC))
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS_SD) -o $@

$(BUILD)/batonctl: $(call obj,supervisor/ctl.c supervisor/command_table.c supervisor/control.c \
		    supervisor/leftovers.c \
		    supervisor/listener.c supervisor/log.c supervisor/unix_server.c $(PROTO_SRC) \
		    $(COMMON_SRC))
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS_SD) -o $@

# The HTTP server that the tests, scripts/demo and tests/bench run.
$(BUILD)/example-httpd: $(call obj,tests/httpd/example-httpd.c common/duration.c common/sockaddr.c) \
			 $(BUILD)/libbaton.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS_SD) -o $@

# libbaton (worker/baton.h). The shared library exports baton_* only (worker/libbaton.map); the
# static one is one object pre-linked with every other symbol made local, so that neither lends
# its proto/ and common/ internals to the program that links it. Both need libsystemd.
LIBBATON_SRC	:= worker/baton.c proto/fdpass.c proto/proto.c common/listen_close.c
LIBBATON_SONAME	:= libbaton.so.0

$(BUILD)/libbaton.so: $(call obj,$(LIBBATON_SRC)) worker/libbaton.map $(BUILD)/baton-h-c99.o
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -shared -Wl,-soname,$(LIBBATON_SONAME) \
		-Wl,--version-script=worker/libbaton.map $(if $(SAN),,-Wl,-z,defs) \
		$(call obj,$(LIBBATON_SRC)) $(LDLIBS_SD) -o $@

$(BUILD)/libbaton.a: $(call obj,$(LIBBATON_SRC)) $(BUILD)/baton-h-c99.o
	$(CC) -r -nostdlib $(call obj,$(LIBBATON_SRC)) -o $(BUILD)/obj/libbaton-all.o
	objcopy --wildcard --keep-global-symbol='baton_*' $(BUILD)/obj/libbaton-all.o
	rm -f $@ && $(AR) rcs $@ $(BUILD)/obj/libbaton-all.o

# baton.h is plain C99 (STYLE.md rule 1): it must compile alone, without the project's flags.
$(BUILD)/baton-h-c99.o: worker/baton.h
	@mkdir -p $(dir $@)
	printf '#include "baton.h"\nint main(void) { return baton_mode(0); }\n' | \
		$(CC) -std=c99 -pedantic-errors -Wall -Wextra -Werror -Iworker -x c -c - -o $@

# worker/examples/hello.c, built the way its users build it: against a staged 'make install'
# through pkg-config, so that it sees the installed baton.h and libbaton.so and nothing of the
# tree. The rpath stands in for the loader's path, which has $(LIBDIR) but not the stage. Under
# SANITIZE=1 the installed library is instrumented, so hello links the sanitizer runtime too.
STAGE		:= $(abspath $(BUILD)/stage)
STAGE_PC	= PKG_CONFIG_PATH=$(STAGE)$(LIBDIR)/pkgconfig PKG_CONFIG_SYSROOT_DIR=$(STAGE) $(PKG_CONFIG)
# make install builds baton-hello (the server the shipped unit runs) the same way, against the
# libbaton it has just installed; without an rpath, as a user would: the loader's path has $(LIBDIR)
# once ldconfig has run (make install runs it when it installs as root without DESTDIR).
DEST_PC		= PKG_CONFIG_PATH=$(DESTDIR)$(LIBDIR)/pkgconfig PKG_CONFIG_SYSROOT_DIR=$(DESTDIR) $(PKG_CONFIG)

$(BUILD)/hello: worker/examples/hello.c worker/libbaton.pc.in worker/baton.h $(PROGRAMS)
	rm -rf $(STAGE)
	@$(MAKE) --no-print-directory install DESTDIR=$(STAGE) >/dev/null
	$(CC) $(CFLAGS) $(SAN) -std=c99 -pedantic-errors -Wall -Wextra -Werror \
		$$($(STAGE_PC) --cflags libbaton) $< $$($(STAGE_PC) --libs libbaton) \
		-Wl,-rpath,$(STAGE)$(LIBDIR) -o $@

# Programs that include baton.h as a user of the library would.
$(call obj,tests/httpd/example-httpd.c tests/unit/test_baton.c): ALL_CFLAGS += -Iworker

$(BUILD)/loadgen: $(call obj,tests/bench/loadgen.c $(PROTO_SRC) $(COMMON_SRC))
	$(CC) $(ALL_CFLAGS) -pthread $^ -o $@

# A server the preload shim cannot reach (no PT_INTERP, no libc to wrap): --intercept's test.
$(BUILD)/static-server: tests/integration/static_server.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(SAN),$(ALL_CFLAGS)) -static $< -o $@

# Loaded into servers that are not sanitized, so built without $(SAN) even with SANITIZE=1 (an
# ASan library cannot be preloaded into an uninstrumented program), and without fortify, whose
# inline poll() would clash with the shim's own. Exports only the functions it wraps.
PRELOAD_CFLAGS := $(filter-out $(SAN),$(ALL_CFLAGS)) -U_FORTIFY_SOURCE -fvisibility=hidden

$(BUILD)/libbaton-preload.so: worker/preload.c
	@mkdir -p $(dir $@)
	$(CC) $(PRELOAD_CFLAGS) $(LDFLAGS) -shared -Wl,-z,defs $< -ldl -pthread -o $@

$(UNIT_BIN): $(call obj,$(UNIT_SRC) $(SUPERVISOR_LIB) $(PROTO_SRC) $(COMMON_SRC) worker/baton.c)
	$(CC) $(ALL_CFLAGS) $^ $(LDLIBS_CHK) $(LDLIBS_SD) -o $@

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

check: deps
	@$(MAKE) --no-print-directory check-run

check-run: programs $(BUILD)/hello $(UNIT_BIN) lint analyze fuzz-smoke
	@BUILD=$(BUILD) $(PYTHON) tests/run-all.py --build $(BUILD)

unit: $(UNIT_BIN)
	$(UNIT_BIN)

integration: programs $(BUILD)/hello
	$(PYTHON) tests/integration/run.py --build $(BUILD)

# The style rules that a compiler cannot see.
lint:
	@scripts/lint

# gcc's static analyzer over every C file of the tree, each compiled as the build compiles it.
# Zero reports is the rule; a suppression names its reason in a comment where it is made.
ANALYZE_FLAGS := -fanalyzer -O1 -std=c17 -D_GNU_SOURCE -DBATON_VERSION='"$(VERSION)"' \
		 -DBATON_LIBDIR='"$(PKGLIBDIR)"' $(WARN) -Icommon -Iproto -Isupervisor -Iworker \
		 -Itests/fuzz
analyze:
	@fail=0; for f in $$(git ls-files '*.c'); do \
		$(CC) $(ANALYZE_FLAGS) $(CFLAGS_SD) $(CFLAGS_CHK) -c $$f -o /dev/null || fail=1; \
	done; [ $$fail -eq 0 ] && echo "analyze: ok ($$(git ls-files '*.c' | wc -l) files)"

format:
	clang-format-14 -i $$(git ls-files '*.c' '*.h')

demo: deps
	@$(MAKE) --no-print-directory programs
	@BUILD=$(BUILD) $(PYTHON) scripts/demo $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory programs
	@tests/bench/run $(BUILD)
	@$(PYTHON) tests/bench/handoff.py $(BUILD)
	@$(PYTHON) tests/bench/stop.py $(BUILD)
	@$(PYTHON) tests/bench/servers.py $(BUILD)
	@$(PYTHON) tests/bench/reload_cost.py $(BUILD)

# Long runs, not part of make check: 1,000 reloads under load with random worker faults
# (failed, batond's memory and fds at the start and the end), then batond under valgrind's
# memcheck (--track-fds=yes) through 50 reloads and a stop. docs/RELIABILITY.md has the results.
soak: deps
	@$(MAKE) --no-print-directory programs
	@$(PYTHON) tests/bench/soak.py $(BUILD)
	@tests/bench/valgrind_reloads.sh $(BUILD)

# Debian packages (debian/): batond, libbaton0, libbaton-dev, built from the tracked files in a
# copy under $(BUILD)/deb, so the tree stays clean; lintian checks them. Build dependencies come
# from scripts/install-deps.
DEB_DIR := $(BUILD)/deb
deb: deps
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/baton-$(VERSION)
	git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t $(DEB_DIR)/baton-$(VERSION)
	# A package is built as a packager would, not with this make's variables (SANITIZE, BUILD).
	cd $(DEB_DIR)/baton-$(VERSION) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SANITIZE \
		-u BUILD dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning $(DEB_DIR)/*.changes
	@ls $(DEB_DIR)/*.deb

# libFuzzer: one target per parser, tests/fuzz/fuzz_NAME.c with its seeds in tests/fuzz/corpus/NAME
# (tests/fuzz/README.md). Each links the instrumented objects it needs from one archive, and
# tests/fuzz/harness.c, which keeps host names from becoming DNS queries (--wrap=getaddrinfo).
# make fuzz runs each target for FUZZ_SECONDS, one after the other; make check (fuzz-smoke)
# builds every target and runs its seeds and a few hundred mutations, so that none can rot.
# -Wno-cast-align: clang's warns on every cast to a stricter alignment (gcc's only where a
# misaligned access traps); UBSan checks the alignment of every real access instead.
FUZZ_CC		?= clang-14
FUZZ_SECONDS	?= 60
FUZZ_RUNS	?= # executions per target instead of FUZZ_SECONDS, e.g. 10000000
FUZZ_DIR	:= $(BUILD)/fuzz
FUZZ_TARGETS	:= $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BINS	:= $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))
FUZZ_CFLAGS	:= -g -O1 -std=c17 -D_GNU_SOURCE -DBATON_VERSION='"$(VERSION)"' \
		   -DBATON_LIBDIR='"$(PKGLIBDIR)"' $(WARN) -Wno-cast-align -fno-omit-frame-pointer \
		   -fsanitize=address,undefined -fno-sanitize-recover=all \
		   -Icommon -Iproto -Isupervisor -Itests/fuzz
FUZZ_LIB_OBJ	:= $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(SUPERVISOR_LIB) $(PROTO_SRC) $(COMMON_SRC) \
		     tests/fuzz/harness.c)

$(FUZZ_DIR)/obj/%.o: %.c | fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(CFLAGS_SD) -fsanitize=fuzzer-no-link $(FUZZ_COV) -MMD -MP \
		-c $< -o $@

# The rollout machine walks its 2,048 records several times per event: comparison tracing
# there made fuzz_rollout 10 times slower for no guidance (its inputs are events, not values
# compared with input bytes). Edge coverage stays.
$(FUZZ_DIR)/obj/supervisor/rollout.o $(FUZZ_DIR)/obj/tests/fuzz/fuzz_rollout.o: \
	FUZZ_COV := -fno-sanitize-coverage=trace-cmp -O2

$(FUZZ_DIR)/libfuzz.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && $(AR) rcs $@ $^

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_DIR)/libfuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_DIR)/libfuzz.a -Wl,--wrap=getaddrinfo \
		$(LDLIBS_SD) -o $@

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)

fuzz-deps:
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: needs $(FUZZ_CC) and libclang-rt-14-dev (scripts/install-deps installs them)" >&2; exit 1; }

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@FUZZ_RUNS=$(FUZZ_RUNS) tests/fuzz/run $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	@tests/fuzz/run --smoke $(FUZZ_DIR) 0 $(FUZZ_TARGETS)

install: programs
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BUILD)/batond $(DESTDIR)$(BINDIR)/batond
	install -m 0755 $(BUILD)/batonctl $(DESTDIR)$(BINDIR)/batonctl
	install -m 0644 docs/batonctl.8 $(DESTDIR)$(MANDIR)/man8/batonctl.8
	install -m 0644 docs/batond.8 $(DESTDIR)$(MANDIR)/man8/batond.8
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m 0644 docs/baton-hello.1 $(DESTDIR)$(MANDIR)/man1/baton-hello.1
	install -d $(DESTDIR)$(PKGLIBDIR)
	install -m 0644 $(BUILD)/libbaton-preload.so $(DESTDIR)$(PKGLIBDIR)/libbaton-preload.so
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(MANDIR)/man3
	install -m 0755 $(BUILD)/libbaton.so $(DESTDIR)$(LIBDIR)/libbaton.so.$(VERSION)
	ln -sf libbaton.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(LIBBATON_SONAME)
	ln -sf $(LIBBATON_SONAME) $(DESTDIR)$(LIBDIR)/libbaton.so
	install -m 0644 $(BUILD)/libbaton.a $(DESTDIR)$(LIBDIR)/libbaton.a
	install -m 0644 worker/baton.h $(DESTDIR)$(INCLUDEDIR)/baton.h
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' worker/libbaton.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libbaton.pc
	install -m 0644 docs/baton.3 $(DESTDIR)$(MANDIR)/man3/baton.3
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(EXAMPLEDIR)
	for u in batond@.service batond@.socket; do \
		sed 's|/usr/local/bin/|$(BINDIR)/|g' docs/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u; \
	done
	install -m 0644 worker/examples/hello.c $(DESTDIR)$(EXAMPLEDIR)/hello.c
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(SAN) -std=c99 -pedantic-errors -Wall -Wextra -Werror \
		$$($(DEST_PC) --cflags libbaton) worker/examples/hello.c $$($(DEST_PC) --libs libbaton) \
		-o $(DESTDIR)$(BINDIR)/baton-hello
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then \
		ldconfig; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/batond $(DESTDIR)$(MANDIR)/man8/batond.8 \
	      $(DESTDIR)$(BINDIR)/batonctl $(DESTDIR)$(MANDIR)/man8/batonctl.8
	rm -f $(DESTDIR)$(PKGLIBDIR)/libbaton-preload.so
	rm -f $(DESTDIR)$(LIBDIR)/libbaton.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(LIBBATON_SONAME) \
	      $(DESTDIR)$(LIBDIR)/libbaton.so $(DESTDIR)$(LIBDIR)/libbaton.a \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/libbaton.pc $(DESTDIR)$(INCLUDEDIR)/baton.h \
	      $(DESTDIR)$(MANDIR)/man3/baton.3
	rm -f $(DESTDIR)$(BINDIR)/baton-hello $(DESTDIR)$(EXAMPLEDIR)/hello.c \
	      $(DESTDIR)$(MANDIR)/man1/baton-hello.1 \
	      $(DESTDIR)$(UNITDIR)/batond@.service $(DESTDIR)$(UNITDIR)/batond@.socket
	-rmdir $(DESTDIR)$(PKGLIBDIR) $(DESTDIR)$(EXAMPLEDIR) 2>/dev/null

clean:
	rm -rf build
