# ficus — build, test, demo.
#   make            build ./ficus (optimised)
#   make demo       install missing dependencies, build, run the embedded demo
#   make test       everything CI runs: unit + integration tests, optimised and
#                   ASan+UBSan builds, fuzz smoke runs, format and lint checks
#   make MODE=asan  build with AddressSanitizer + UndefinedBehaviorSanitizer
#   make install    install the binary, man page, example config and systemd
#                   units under PREFIX (/usr/local), staged under DESTDIR if set;
#                   make uninstall removes them

MODE    ?= release
BUILD   := build/$(MODE)
CC      ?= cc
LLHTTP  ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
PKGS    := libuv yaml-0.1 libpcre2-8 jansson openssl hiredis libnghttp2

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes
CFLAGS_COMMON := -std=gnu11 -g -D_GNU_SOURCE -Isrc -I$(LLHTTP_INC) $(PKG_CFLAGS) \
                 -DFICUS_VERSION='"$(VERSION)"' -DLLHTTP_STRICT_MODE=1 -pthread
ifeq ($(MODE),asan)
  CC := clang
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDOPT := -fsanitize=address,undefined
else ifeq ($(MODE),debug)
  OPT := -O0
else
  OPT := -O2 -fno-plt
endif
CFLAGS  ?=
CFLAGS  += $(CFLAGS_COMMON) $(OPT)
LDLIBS  := $(PKG_LIBS) -lm -pthread

SRC      := $(shell find src -name '*.c' | sort)
LIB_SRC  := $(filter-out src/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LLHTTP_OBJ := $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
UI_OBJ   := $(BUILD)/gen/board_page.o
LIB      := $(BUILD)/libficus.a
BIN      := $(BUILD)/ficus

UNIT_SRC := $(shell find tests/unit -name 'test_*.c' 2>/dev/null | sort)
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)
FUZZ_SRC := $(shell find fuzz -name 'fuzz_*.c' 2>/dev/null | sort)

PYTEST   ?= /usr/bin/python3 -m pytest

.PHONY: all deps deps-build demo test test-unit test-integration test-asan \
        test-release fuzz format format-check lint clean bench layering \
        install uninstall

all: ficus

ficus: $(BIN)
ifeq ($(MODE),release)
	cp $(BIN) ficus.new && mv -f ficus.new ficus
endif

$(BIN): $(BUILD)/src/main.o $(LIB)
	$(CC) $(LDOPT) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJ) $(LLHTTP_OBJ) $(UI_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The migration board's page (GET /ui/) is a real HTML file, made into a C
# string here: backslashes and quotes escaped, each line a literal.
$(BUILD)/gen/board_page.c: src/admin/ui/board.html
	@mkdir -p $(dir $@)
	{ printf '/* Generated from %s by the Makefile: do not edit. */\n' '$<'; \
	  printf '#include "admin/board_page.h"\nconst char board_page_html[] =\n'; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; \
	  printf ';\nconst size_t board_page_html_len = sizeof board_page_html - 1;\n'; } > $@.tmp
	mv -f $@.tmp $@

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(CFLAGS) $(WARN) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -MMD -MP -c -o $@ $<

# llhttp is compiled from Debian's node-llhttp sources, strict mode on.
$(BUILD)/llhttp/%.o: $(LLHTTP)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -w -c -o $@ $<

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -MMD -MP -Itests/unit $(LDOPT) -o $@ $< $(LIB) $(LDLIBS) -lcmocka

deps:
	@sh scripts/install-deps.sh all

deps-build:
	@sh scripts/install-deps.sh build

demo: deps-build
	$(MAKE) ficus
	./ficus demo

unit: $(UNIT_BIN)

test-unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

test-integration: $(BIN)
	FICUS_BIN=$(abspath $(BIN)) FICUS_MODE=$(MODE) $(PYTEST) -q -p no:cacheprovider tests/integration

# One mode's build and tests.
test-mode: test-unit test-integration

test-release:
	$(MAKE) MODE=release ficus
	$(MAKE) MODE=release test-mode

test-asan:
	$(MAKE) MODE=asan test-mode

test: deps
	$(MAKE) layering
	$(MAKE) format-check
	$(MAKE) lint
	$(MAKE) test-release
	$(MAKE) test-asan
	$(MAKE) fuzz FUZZ_SECONDS=$${FUZZ_SECONDS:-20}

FUZZ_SECONDS ?= 60
FUZZ_BUILD := build/fuzz
FUZZ_CFLAGS := $(CFLAGS_COMMON) -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
fuzz:
	@mkdir -p $(FUZZ_BUILD)
	$(MAKE) MODE=fuzz-lib CC=clang OPT="-O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined" \
	        BUILD=$(FUZZ_BUILD)/lib $(FUZZ_BUILD)/lib/libficus.a
	@set -e; for f in $(FUZZ_SRC); do \
	  n=$$(basename $$f .c); \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  clang $(FUZZ_CFLAGS) $(WARN) -o $(FUZZ_BUILD)/$$n $$f $(FUZZ_BUILD)/lib/libficus.a $(LDLIBS); \
	  mkdir -p fuzz/corpus-$$n; \
	  rc=0; $(FUZZ_BUILD)/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
	     -artifact_prefix=$(FUZZ_BUILD)/ fuzz/corpus-$$n fuzz/seeds/$$n \
	     > $(FUZZ_BUILD)/$$n.log 2>&1 || rc=$$?; \
	  tail -n 3 $(FUZZ_BUILD)/$$n.log; \
	  if [ $$rc -ne 0 ]; then \
	    grep -A40 -m1 -E 'ERROR|deadly signal|runtime error' $(FUZZ_BUILD)/$$n.log; \
	    echo "fuzz: $$n failed (exit $$rc); the input is in $(FUZZ_BUILD)/"; exit 1; \
	  fi; \
	done

format:
	clang-format -i $(SRC) $(shell find src tests/unit fuzz -name '*.h' -o -name '*.c' | sort -u)

format-check:
	@clang-format --dry-run --Werror $(shell find src tests/unit fuzz -name '*.h' -o -name '*.c' | sort -u)
	@echo "format: clean"

lint:
	@cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
	  --inline-suppr --suppress=missingIncludeSystem -D__GNUC__ -Isrc src
	@echo "lint: clean"

layering:
	@sh scripts/check-layers.sh

bench: ficus
	bench/run.sh

# Install layout (GNU conventions). The units' ExecStart names BINDIR's ficus.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/ficus
UNITDIR     ?= $(PREFIX)/lib/systemd/system
INSTALL     ?= install
UNITS       := ficus.service ficus@.service
EXAMPLES    := gateway.yaml shops.txt

install: ficus
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(UNITDIR)
	$(INSTALL) -m 755 ficus $(DESTDIR)$(BINDIR)/ficus
	sed '1,/^\.TH/s/"ficus [0-9][^"]*"/"ficus $(VERSION)"/' docs/ficus.1 > $(DESTDIR)$(MANDIR)/man1/ficus.1
	chmod 644 $(DESTDIR)$(MANDIR)/man1/ficus.1
	$(INSTALL) -m 644 LICENSE CHANGELOG.md README.md $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -m 644 $(addprefix examples/,$(EXAMPLES)) $(DESTDIR)$(DOCDIR)/examples/
	@set -e; for u in $(UNITS); do \
	  echo "install deploy/systemd/$$u -> $(DESTDIR)$(UNITDIR)/$$u"; \
	  sed 's|/usr/local/bin/ficus|$(BINDIR)/ficus|g' deploy/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp; \
	  chmod 644 $(DESTDIR)$(UNITDIR)/$$u.tmp; mv -f $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u; \
	done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ficus $(DESTDIR)$(MANDIR)/man1/ficus.1 \
	  $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
	  $(addprefix $(DESTDIR)$(DOCDIR)/,LICENSE CHANGELOG.md README.md) \
	  $(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(EXAMPLES))
	rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null || true

clean:
	rm -rf build ficus

-include $(shell find build -name '*.d' 2>/dev/null)
