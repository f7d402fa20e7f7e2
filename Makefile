# nsa: one binary (build/nsa), one test binary (build/tests), Debian packages only.
#
#   make            install missing packages, build build/nsa
#   make test       check include directions, build and run every Criterion test (what .ci/run calls)
#   make test-asan  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz       each libFuzzer target in fuzz/ for FUZZ_SECONDS (default 600); make test
#                   runs each for FUZZ_TEST_SECONDS (default 15)
#   make train      install, build, prepare the KJV corpus, train `small`, evaluate, sample
#   make hangcheck  the full backward-hang matrix (seed12 dimensions)
#   make bench      long measurements (never part of make test)
#   make fixtures   regenerate tests/fixtures/ with the PyTorch reference (needs python3-torch)

BUILD ?= build
# Sub-makes that compile run with one job per core unless the caller already gave -j (which
# the sub-make then shares): the sanitizer builds of the attention kernels take minutes per
# file, and CI (`.ci/run`, plain `make test`) must finish within 20 minutes on 2 cores.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
SUBMAKE = $(MAKE) --no-print-directory $(if $(filter -j%,$(MAKEFLAGS)),,-j$(JOBS))
CC ?= cc
OPT ?= -O3 -march=native
SAN ?=
HDF5_CFLAGS := $(shell pkg-config --cflags hdf5-serial 2>/dev/null || echo -I/usr/include/hdf5/serial)
HDF5_LIBS := $(shell pkg-config --libs hdf5-serial 2>/dev/null || echo -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5)
# OpenMPI (train/dist.c): linked always, initialised only under mpirun.
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null || echo -I/usr/lib/x86_64-linux-gnu/openmpi/include)
MPI_LIBS := $(shell pkg-config --libs ompi-c 2>/dev/null || echo -L/usr/lib/x86_64-linux-gnu/openmpi/lib -lmpi)
# -fno-trapping-math: nothing here reads the floating-point exception flags, so the compiler
# may evaluate both arms of a float select. Without it gcc keeps the clamps and NaN checks
# of nsa_expf (kernels/vexp.h) as branches on AVX2 and leaves SwiGLU, SiLU and the gates
# scalar (AVX-512 masks hid this). Values are unchanged: no reassociation, no contraction.
# make test checks that those loops vectorise (scripts/check-vectorised.sh).
FPFLAGS := -fno-trapping-math
CFLAGS := -std=c11 $(OPT) $(FPFLAGS) -g -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE -I. $(HDF5_CFLAGS) \
          $(MPI_CFLAGS) $(SAN) -MMD -MP
LDLIBS := $(HDF5_LIBS) $(MPI_LIBS) -lopenblas -lm
LDFLAGS := -fopenmp $(SAN)

# cmd/ joins the library (tests call the commands in-process) except main.c, the binary's entry.
LIB_SRC := $(wildcard autograd/*.c kernels/*.c model/*.c data/*.c train/*.c eval/*.c) \
           $(filter-out cmd/main.c,$(wildcard cmd/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps build test test-asan fuzz fuzz-build fuzz-corpus train hangcheck bench fixtures clean
.DEFAULT_GOAL := all

# Packages first, then a fresh make that sees their headers (pkg-config is read at parse time).
all: deps
	@$(SUBMAKE) build

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
# binary is built too because CLI tests run it. The include-direction check goes first,
# then the kernels compiled for CPUs without AVX-512, without and with AVX2 (x86-64-v2 and
# -v3; syntax and warnings only): the build here uses -march=native, so nothing else would
# notice AVX-512 or AVX2 code outside its #if (session 8's top-n had some until its review).
# check-vectorised.sh: the activation and gate loops stay vector code on AVX2 and AVX-512.
test: deps
	scripts/check-layers.sh
	CHECK_VEC_FLAGS="-O3 $(FPFLAGS)" scripts/check-vectorised.sh $(CC)
	for m in x86-64-v2 x86-64-v3; do \
	  $(CC) -std=c11 -fopenmp -D_GNU_SOURCE -I. -march=$$m -fsyntax-only -Wall -Wextra -Werror kernels/*.c || exit 1; \
	done
	@$(SUBMAKE) $(BUILD)/nsa $(BUILD)/run-tests
	NSA_BIN=$(BUILD)/nsa $(BUILD)/run-tests --jobs 2
	@$(SUBMAKE) fuzz-build
	@for t in $(FUZZ_TARGETS); do fuzz/run.sh $$t $(FUZZ_TEST_SECONDS) test || exit 1; done

test-asan: deps
	@$(SUBMAKE) BUILD=build-asan OPT="-O1 -march=native" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  build-asan/nsa build-asan/run-tests
	NSA_BIN=build-asan/nsa ASAN_OPTIONS=detect_leaks=0 build-asan/run-tests --jobs 2

# Fuzzing (issue 13): libFuzzer targets for the config parser and the HDF5 loaders
# (checkpoint, dataset, Q4_K checkpoint), the library built by clang with ASan + UBSan in
# build-fuzz/. Seeds are committed in fuzz/corpus/ (regenerated by `make fuzz-corpus`; see
# fuzz/make_corpus.c and fuzz/run.sh for the two kinds and which run uses which).
FUZZ_TARGETS := config checkpoint dataset q4k
FUZZ_SECONDS ?= 600
FUZZ_TEST_SECONDS ?= 15
FUZZ_OBJ := $(BUILD)/fuzz/memfile.o $(BUILD)/fuzz/forward.o

.SECONDARY: $(FUZZ_OBJ) $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%.o)
$(BUILD)/fuzz_%: $(BUILD)/fuzz/fuzz_%.o $(FUZZ_OBJ) $(BUILD)/libnsa.a
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# clang at -O1 under the sanitizers leaves `omp simd` loops scalar and says so
# (-Wpass-failed): expected in this build, not a defect, so not an error here.
# -march=x86-64-v2: the attention kernels' AVX2 and AVX-512 lanes (kernels/attn_lanes.h,
# chosen by #if) are left out and the fuzzers run their portable twins. clang 14 with the
# sanitizers took 208 s for kernels/attention.c alone with AVX2 and over 7 minutes with
# AVX-512 (Zen 4, session 15), against 34 s without; the fuzzers exercise the loaders, and
# `make test-asan` runs the vector lanes under the sanitizers. The Q4_K and matmul kernels
# pick their ISA by target attribute and stay in.
fuzz-build: deps
	@$(SUBMAKE) BUILD=build-fuzz CC=clang OPT="-O1 -march=x86-64-v2" \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
	  -Wno-pass-failed" \
	  $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)

# clang 14 does not know __builtin_cpu_supports("f16c"): in the fuzz build the CPU-feature
# probe alone is compiled by gcc, uninstrumented (it only reads cpuid and the environment).
# -MMD -MP as for every object: a CpuInfo that grows must rebuild it (a stale cpu.o defined a
# smaller nsa_cpu than the other objects read).
build-fuzz/kernels/cpu.o: kernels/cpu.c
	@mkdir -p $(dir $@)
	gcc -std=c11 $(OPT) -g -fopenmp -Wall -Wextra -Werror -D_GNU_SOURCE -I. -MMD -MP -c $< -o $@

fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do fuzz/run.sh $$t $(FUZZ_SECONDS) keep || exit 1; done

$(BUILD)/make_corpus: $(BUILD)/fuzz/make_corpus.o $(BUILD)/libnsa.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The seed folders make_corpus writes; fuzz/corpus/*-regress/ are kept by hand and left alone.
FUZZ_CORPUS_DIRS := fuzz/corpus/config $(foreach t,checkpoint dataset q4k,fuzz/corpus/$(t) fuzz/corpus/$(t)-foreign)
fuzz-corpus: deps
	@$(SUBMAKE) $(BUILD)/make_corpus
	rm -rf $(FUZZ_CORPUS_DIRS)
	mkdir -p $(FUZZ_CORPUS_DIRS)
	cp data/configs/*.cfg fuzz/corpus/config/
	$(BUILD)/make_corpus fuzz/corpus

# The full backward-hang matrix (issue 5): seed12 dimensions, layers {1,12} x S {128..2048}
# x checkpoint {none,layer} x selected-branch path {index,materialise}, under the watchdog;
# the table also goes to build/hangcheck.json. Exit 124 means the watchdog fired.
hangcheck: deps
	@$(SUBMAKE) $(BUILD)/nsa
	$(BUILD)/nsa hangcheck --max-bwd-ratio 3 --json $(BUILD)/hangcheck.json

# The default training run (issue 4): KJV corpus, `small` with NSA for ~10 minutes on 2
# cores, then validation loss, a greedy sample and the loss plot. A run directory that
# already has checkpoints is continued (--resume; a finished run is only re-evaluated).
TRAIN_CONFIG ?= data/configs/train-small.cfg
TRAIN_RUN ?= runs/small
train:
	@scripts/install-deps.sh --train
	@$(SUBMAKE) build
	scripts/get-corpus.sh $(BUILD)/nsa
	@if [ -f $(TRAIN_RUN)/latest ]; then set -x; $(BUILD)/nsa train --resume $(TRAIN_RUN); \
	else set -x; $(BUILD)/nsa train --config $(TRAIN_CONFIG) --set run_dir=$(TRAIN_RUN); fi
	$(BUILD)/nsa eval --ckpt $(TRAIN_RUN)/$$(cat $(TRAIN_RUN)/latest) --data data/kjv.h5 --quant q4_k
	$(BUILD)/nsa generate --ckpt $(TRAIN_RUN)/$$(cat $(TRAIN_RUN)/latest) --prompt "And God said" \
	  --max-tokens 200 --temperature 0
	/usr/bin/python3 scripts/plot.py $(TRAIN_RUN) --out $(TRAIN_RUN)/loss.png

# Long measurements: peak RSS and step time of gradient checkpointing (seed12, S = 2048).
bench: deps
	@$(SUBMAKE) build
	$(BUILD)/nsa bench kernels
	scripts/bench-ckpt.sh $(BUILD)/nsa

fixtures:
	@scripts/install-deps.sh --python
	/usr/bin/python3 scripts/reference.py --fixtures tests/fixtures

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/cmd/main.d $(wildcard $(BUILD)/fuzz/*.d)
