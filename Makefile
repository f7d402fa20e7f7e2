# nsa: one binary (build/nsa), one test binary (build/tests), Debian packages only.
#
#   make            install missing packages, build build/nsa
#   make test       check include directions, build and run every Criterion test (what .ci/run calls)
#   make test-asan  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make train      install, build, prepare the KJV corpus, train `small`, evaluate, sample
#   make hangcheck  the full backward-hang matrix (seed12 dimensions)
#   make bench      long measurements (never part of make test)
#   make fixtures   regenerate tests/fixtures/ with the PyTorch reference (needs python3-torch)

BUILD ?= build
CC ?= cc
OPT ?= -O3 -march=native
SAN ?=
HDF5_CFLAGS := $(shell pkg-config --cflags hdf5-serial 2>/dev/null || echo -I/usr/include/hdf5/serial)
HDF5_LIBS := $(shell pkg-config --libs hdf5-serial 2>/dev/null || echo -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5)
CFLAGS := -std=c11 $(OPT) -g -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE -I. $(HDF5_CFLAGS) $(SAN) -MMD -MP
LDLIBS := $(HDF5_LIBS) -lopenblas -lm
LDFLAGS := -fopenmp $(SAN)

# cmd/ joins the library (tests call the commands in-process) except main.c, the binary's entry.
LIB_SRC := $(wildcard autograd/*.c kernels/*.c model/*.c data/*.c train/*.c eval/*.c) \
           $(filter-out cmd/main.c,$(wildcard cmd/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps build test test-asan train hangcheck bench fixtures clean
.DEFAULT_GOAL := all

# Packages first, then a fresh make that sees their headers (pkg-config is read at parse time).
all: deps
	@$(MAKE) --no-print-directory build

deps:
	@scripts/install-deps.sh

build: $(BUILD)/nsa

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libnsa.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/nsa: $(BUILD)/cmd/main.o $(BUILD)/libnsa.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/run-tests: $(TEST_OBJ) $(BUILD)/libnsa.a
	$(CC) $(LDFLAGS) -o $@ $^ -lcriterion $(LDLIBS)

# Tests run from the repository root (fixtures are found by relative path); the nsa
# binary is built too because CLI tests run it. The include-direction check goes first.
test: deps
	scripts/check-layers.sh
	@$(MAKE) --no-print-directory $(BUILD)/nsa $(BUILD)/run-tests
	NSA_BIN=$(BUILD)/nsa $(BUILD)/run-tests --jobs 2

test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -march=native" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  build-asan/nsa build-asan/run-tests
	NSA_BIN=build-asan/nsa ASAN_OPTIONS=detect_leaks=0 build-asan/run-tests --jobs 2

# The full backward-hang matrix (issue 5): seed12 dimensions, layers {1,12} x S {128..2048}
# x checkpoint {none,layer} x selected-branch path {index,materialise}, under the watchdog;
# the table also goes to build/hangcheck.json. Exit 124 means the watchdog fired.
hangcheck: deps
	@$(MAKE) --no-print-directory $(BUILD)/nsa
	$(BUILD)/nsa hangcheck --max-bwd-ratio 3 --json $(BUILD)/hangcheck.json

# The default training run (issue 4): KJV corpus, `small` with NSA for ~10 minutes on 2
# cores, then validation loss, a greedy sample and the loss plot. A run directory that
# already has checkpoints is continued (--resume; a finished run is only re-evaluated).
TRAIN_CONFIG ?= data/configs/train-small.cfg
TRAIN_RUN ?= runs/small
train:
	@scripts/install-deps.sh --train
	@$(MAKE) --no-print-directory build
	scripts/get-corpus.sh $(BUILD)/nsa
	@if [ -f $(TRAIN_RUN)/latest ]; then set -x; $(BUILD)/nsa train --resume $(TRAIN_RUN); \
	else set -x; $(BUILD)/nsa train --config $(TRAIN_CONFIG) --set run_dir=$(TRAIN_RUN); fi
	$(BUILD)/nsa eval --ckpt $(TRAIN_RUN)/$$(cat $(TRAIN_RUN)/latest) --data data/kjv.h5 --quant q4_k
	$(BUILD)/nsa generate --ckpt $(TRAIN_RUN)/$$(cat $(TRAIN_RUN)/latest) --prompt "And God said" \
	  --max-tokens 200 --temperature 0
	/usr/bin/python3 scripts/plot.py $(TRAIN_RUN) --out $(TRAIN_RUN)/loss.png

# Long measurements: peak RSS and step time of gradient checkpointing (seed12, S = 2048).
bench: deps
	@$(MAKE) --no-print-directory build
	$(BUILD)/nsa bench kernels
	scripts/bench-ckpt.sh $(BUILD)/nsa

fixtures:
	@scripts/install-deps.sh --python
	/usr/bin/python3 scripts/reference.py --fixtures tests/fixtures

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/cmd/main.d
