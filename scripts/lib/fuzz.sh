# Building and running the libFuzzer targets of fuzz/, shared by scripts/fuzz (long runs) and
# the fuzz smoke stage of scripts/test (CI). Source it; it defines functions and variables only.
#
# The build is what `cargo fuzz build` does, without needing cargo-fuzz installed (2 min on a
# fresh CI machine): a `cargo build --release` of the fuzz crate for the host target
# (so build scripts and proc macros stay uninstrumented) with libFuzzer's coverage
# instrumentation. Debug assertions and overflow checks are always on: an arithmetic overflow
# on hostile input is a finding, not a silent wrap.

FUZZ_TARGETS_ALL=(stratum_line share_header modbus_decode grid_signal energy_report)
# Where the fuzz build goes: under target/ so CI's disk accounting (du target) includes it.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
# The toolchain: nightly when there is one (the address sanitizer needs -Z flags), else the
# machine's default toolchain. libFuzzer's coverage instrumentation (-Cpasses=sancov-module and
# the -Cllvm-args below) is made of stable options, so a stable toolchain fuzzes too, without a
# sanitizer: the code under test is safe Rust, where ASan finds little that a panic or an
# overflow check does not. The CI machine has only its stable toolchain.
if [ -z "${FUZZ_TOOLCHAIN+x}" ]; then
  if cargo +nightly --version >/dev/null 2>&1; then FUZZ_TOOLCHAIN=+nightly; else FUZZ_TOOLCHAIN=""; fi
fi
# address (cargo-fuzz's default; nightly only) or none.
if [ -z "${FUZZ_SANITIZER+x}" ]; then
  if [ "$FUZZ_TOOLCHAIN" = +nightly ]; then FUZZ_SANITIZER=address; else FUZZ_SANITIZER=none; fi
fi

# fuzz_describe: one line naming the toolchain and the sanitizer in use.
fuzz_describe() {
  echo "$(rustc ${FUZZ_TOOLCHAIN} --version), $FUZZ_SANITIZER sanitizer"
}

fuzz_host_triple() {
  rustc ${FUZZ_TOOLCHAIN} -vV | sed -n 's/^host: //p'
}

# The directory the fuzz binaries end up in.
fuzz_bin_dir() {
  echo "$FUZZ_TARGET_DIR/$(fuzz_host_triple)/release"
}

# fuzz_build TARGET...: build the given fuzz targets (all of them when none is given).
fuzz_build() {
  local flags=(
    --cfg fuzzing
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cdebug-assertions
    -Coverflow-checks
  )
  case "$FUZZ_SANITIZER" in
    address)
      [ "$FUZZ_TOOLCHAIN" = +nightly ] || { echo "FUZZ_SANITIZER=address needs FUZZ_TOOLCHAIN=+nightly" >&2; return 2; }
      flags+=(-Zsanitizer=address) ;;
    none) ;;
    *) echo "FUZZ_SANITIZER=$FUZZ_SANITIZER: use address or none" >&2; return 2 ;;
  esac
  local bins=()
  local t
  for t in "$@"; do bins+=(--bin "$t"); done
  [ ${#bins[@]} -gt 0 ] || bins=(--bins)
  # RUSTFLAGS of the caller (e.g. the root workspace's) must not leak into this build, and a
  # CARGO_TARGET_DIR set for the root workspace must not mix sanitizer builds into it.
  env -u CARGO_TARGET_DIR RUSTFLAGS="${flags[*]}" CARGO_INCREMENTAL=0 \
    cargo ${FUZZ_TOOLCHAIN} build --release --manifest-path fuzz/Cargo.toml \
      --target "$(fuzz_host_triple)" --target-dir "$FUZZ_TARGET_DIR" "${bins[@]}"
}

# fuzz_run TARGET SECONDS MODE [LIBFUZZER_ARGS...]: run one built target for SECONDS from
# fuzz/corpus/TARGET. MODE "smoke" leaves the committed corpus untouched (new inputs go to a
# scratch directory); MODE "grow" adds new inputs to the corpus. A crash, panic or failed
# assertion is saved under fuzz/artifacts/TARGET/ and makes this return non-zero.
# Prints libFuzzer's last status line and final stats; the whole log on failure.
fuzz_run() {
  local t="$1" seconds="$2" mode="$3"
  shift 3
  local bin
  bin="$(fuzz_bin_dir)/$t"
  [ -x "$bin" ] || { echo "fuzz_run: $bin is not built" >&2; return 1; }
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local log scratch="" dirs
  log="$(mktemp)"
  # libFuzzer writes new inputs to the first directory it is given.
  if [ "$mode" = smoke ]; then scratch="$(mktemp -d)"; dirs=("$scratch" "fuzz/corpus/$t"); else dirs=("fuzz/corpus/$t"); fi
  local rc=0
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
    "$@" "${dirs[@]}" >"$log" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then
    grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -1 || true
    grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb' "$log" || true
  else
    tail -60 "$log"
    echo "fuzz: $t FAILED (exit $rc; artifact under fuzz/artifacts/$t/)" >&2
  fi
  rm -f "$log"
  [ -z "$scratch" ] || rm -rf "$scratch"
  return $rc
}
