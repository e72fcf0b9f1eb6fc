#!/usr/bin/env bash
# Run on the CPU machine (it has PyPI): fetch what the offline GPU machine lacks, as wheels for CPython 3.12
# manylinux x86_64, into benchmarks/gpu/wheels (git-ignored, ~27 MB):
#   py-spy, bitsandbytes                                   sampling; 8-bit and 4-bit loads
#   fastsafetensors, runai-model-streamer, instanttensor   load.method's third-party loaders (their binaries dlopen
#                                                          CUDA and link no torch, so the image's torch does)
#   humanize                                               runai-model-streamer imports it (the GPU image has it:
#                                                          run.py installs a dependency only where it is missing)
# Not fetched: torch and numpy (declared by the loaders, on the image), and typer, fastsafetensors' one declared
# dependency: the image has it, fastsafetensors never imports it to load, and its closure (pydantic, ...) would
# add 4.5 MB. What travels to the device (tracked files + carried wheels) must stay under 64 MiB, so the
# bitsandbytes wheel (43 MB) keeps only its CUDA >= 12.8 and CPU libraries (the image's torch is cu130);
# the ROCm, XPU and older CUDA ones are dropped, with their RECORD lines.
# Then carry that folder to the device with the working tree (device tool: carry ["benchmarks/gpu/wheels"]).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
target=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
  --platform manylinux1_x86_64)
# --no-deps: torch is a declared dependency of the loaders, and it (with its CUDA libraries) must stay out
python3 -m pip download --no-deps "${target[@]}" -d wheels "py-spy>=0.3.14" "bitsandbytes>=0.45" \
  "fastsafetensors>=0.5" "runai-model-streamer>=0.17" "instanttensor>=0.2" humanize 2>&1 \
  | grep -v "^WARNING: Location" || true
for w in py_spy bitsandbytes fastsafetensors runai_model_streamer instanttensor humanize; do
  ls wheels/"$w"-*.whl >/dev/null  # each must be there
done
python3 - <<'EOF'
import pathlib, re, zipfile
drop = re.compile(r"bitsandbytes/libbitsandbytes_(rocm\d+|xpu\d+|cuda(11\d|12[0-7]))\.so$")
for whl in pathlib.Path("wheels").glob("bitsandbytes-*.whl"):
    with zipfile.ZipFile(whl) as z:
        names = [n for n in z.namelist() if not drop.search(n)]
        if len(names) == len(z.namelist()):
            continue  # trimmed already
        tmp = whl.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for n in names:
                data = z.read(n)
                if n.endswith(".dist-info/RECORD"):
                    data = b"".join(l for l in data.splitlines(True) if not drop.search(l.split(b",")[0].decode()))
                out.writestr(z.getinfo(n), data)
    tmp.replace(whl)
    print(f"{whl.name}: kept the CUDA >= 12.8 and CPU libraries, {whl.stat().st_size / 2**20:.1f} MiB")
EOF
du -sh wheels
