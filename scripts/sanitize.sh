#!/usr/bin/env bash
# Memory-safety check: build rnncore's extension with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option RNNCORE_SANITIZE=ON, one -march=native module) OUT OF TREE, install it in a
# private virtual environment, and run the core test files under it. Exits non-zero on any
# sanitizer report, test failure or build failure.
#
#   scripts/sanitize.sh                 # build (or reuse) + run the default test subset
#   scripts/sanitize.sh -k lstm         # extra arguments go to pytest
#   RNNCORE_SANITIZE_DIR=/tmp/x scripts/sanitize.sh
#   RNNCORE_SANITIZE_TESTS="tests/test_forward.py" scripts/sanitize.sh
#
# Nothing is written inside the checkout: the sources (tracked and untracked-but-not-ignored
# files) are copied to $RNNCORE_SANITIZE_DIR/src, the CMake build lives in .../build (reused,
# so a second run only recompiles what changed), the wheel in .../wheel and the environment in
# .../venv. The venv does not use --system-site-packages: that would also run the editable
# install's import hook, which redirects `import rnncore` to the normal (unsanitized) build.
# Instead a .pth file puts the system site-packages directory on sys.path (numpy, pytest,
# hypothesis, h5py, onnx) without processing its .pth files.
#
# Leak detection is off (CPython leaks by design at exit); leaks are checked by
# scripts/leakcheck.py instead (resident memory over many calls).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
work="${RNNCORE_SANITIZE_DIR:-/tmp/rnncore-sanitize}"
py="${PYTHON:-python3}"
tests="${RNNCORE_SANITIZE_TESTS:-tests/test_forward.py tests/test_backward.py tests/test_stream.py tests/test_bad_input.py tests/test_properties.py tests/test_robustness.py tests/test_threads.py tests/test_fuzz_loaders.py tests/test_long_stream.py}"

mkdir -p "$work"
echo "== sources -> $work/src"
# Copied into a staging folder, then synced by content: unchanged files keep their old
# timestamps, so a re-run recompiles only what changed (the sanitized build is slow).
# RNNCORE_SANITIZE_KEEP_CPP=1 keeps the C++ sources (cpp/, CMakeLists.txt, pyproject.toml)
# already in $work/src: re-run new tests against an existing sanitized build.
rm -rf "$work/stage"
mkdir -p "$work/stage" "$work/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
   | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
   | tar --null -T - -cf -) | tar -xf - -C "$work/stage"
"$py" - "$work/stage" "$work/src" "${RNNCORE_SANITIZE_KEEP_CPP:-0}" <<'PYEOF'
import filecmp, os, shutil, sys
stage, src, keep_cpp = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
cpp = lambda rel: rel.startswith("cpp/") or rel in ("CMakeLists.txt", "pyproject.toml")
have = set()
for d, _, files in os.walk(stage):
    for f in files:
        rel = os.path.relpath(os.path.join(d, f), stage)
        have.add(rel)
        dst = os.path.join(src, rel)
        if keep_cpp and cpp(rel) and os.path.exists(dst):
            continue
        if not (os.path.exists(dst) and filecmp.cmp(os.path.join(stage, rel), dst, False)):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(stage, rel), dst)
for d, _, files in os.walk(src):
    for f in files:
        rel = os.path.relpath(os.path.join(d, f), src)
        if rel not in have and not (keep_cpp and cpp(rel)):
            os.remove(os.path.join(d, f))
PYEOF
rm -rf "$work/stage"

echo "== build (ASan+UBSan, native) in $work/build"
rm -rf "$work/wheel"
"$py" -m pip wheel "$work/src" --no-build-isolation --no-deps -w "$work/wheel" \
    -C cmake.define.RNNCORE_SANITIZE=ON -C cmake.define.RNNCORE_NATIVE=ON \
    -C build-dir="$work/build" -C cmake.build-type=RelWithDebInfo >"$work/build.log" 2>&1 \
  || { tail -50 "$work/build.log"; echo "sanitize.sh: build FAILED"; exit 2; }
wheel="$(ls "$work"/wheel/rnncore-*.whl)"

echo "== venv $work/venv"
if [ ! -x "$work/venv/bin/python" ]; then
  "$py" -m venv --without-pip "$work/venv"
fi
site_sys="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site_venv="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$site_venv"/rnncore "$site_venv"/rnncore-*.dist-info
"$py" -m zipfile -e "$wheel" "$site_venv"
echo "$site_sys" > "$site_venv/zz_system_site.pth"

vpy="$work/venv/bin/python"
libasan="$(gcc -print-file-name=libasan.so)"
libubsan="$(gcc -print-file-name=libubsan.so)"
rm -f "$work"/report.*
export LD_PRELOAD="$libasan:$libubsan"
# allocator_may_return_null=1: an impossible allocation (the absurd-size tests ask NumPy for
# terabytes) returns NULL -> MemoryError, as without ASan, instead of an ASan abort.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:allocator_may_return_null=1:log_path=$work/report.asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87:log_path=$work/report.ubsan"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

where="$("$vpy" -c 'import rnncore, rnncore._core as c; print(rnncore.__file__, c.isa)')"
echo "== rnncore under test: $where"
case "$where" in
  "$site_venv"*native*) ;;
  *) echo "sanitize.sh: the venv does not import the sanitized build"; exit 3 ;;
esac

cd "$work/src"
present=""
for t in $tests; do [ -e "$t" ] && present="$present $t"; done
tests="$present"
echo "== pytest$tests $*"
set +e
# test_forward's ISA-level tests need the multi-level build, not this single native module.
"$vpy" -m pytest -q -p no:cacheprovider -p no:randomly -k "not isa_level" $tests "$@"
rc=$?
set -e
unset LD_PRELOAD
# allocator_may_return_null=1 logs a WARNING for each refused impossible allocation (the
# absurd-size tests cause them on purpose): those are listed, not counted as reports.
if ls "$work"/report.* >/dev/null 2>&1; then
  if grep -l -E "ERROR|runtime error|SUMMARY" "$work"/report.* >/dev/null 2>&1; then
    echo "sanitize.sh: SANITIZER REPORT(S):"
    cat "$work"/report.*
    exit 1
  fi
  echo "sanitize.sh: allocations refused (expected, absurd-size tests):"
  cat "$work"/report.*
fi
if [ "$rc" -ne 0 ]; then
  echo "sanitize.sh: pytest exited $rc"
  exit "$rc"
fi
echo "sanitize.sh: OK, no AddressSanitizer/UndefinedBehaviorSanitizer report"
