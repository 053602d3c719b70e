#!/usr/bin/env python3
"""Static machine-code report of klcal's hot sm_90 kernels (run through scripts/sass-report.sh).

For each histogram and search kernel of the klcal_cuda target of a build: registers, shared
memory, spills, resident blocks per SM on an H100/H200, and, from the disassembly, the static
SASS instruction count of the histogram's steady-state loop per element (and of the search's
candidate loop per candidate). The steady-state loop is the backward branch whose body holds
the most 16-byte global loads and a shared atomic; its instruction count divided by the
elements those loads bring is the issue cost per element that the throughput model in
docs/design.md compares with the memory bandwidth. These are static numbers: no GPU is needed
and nothing here is a measured speed.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

# ---- limits (docs/design.md, "Throughput model") -------------------------------------------
MAX_INSTR_PER_ELEM = {"f32": 20.0, "f16": 12.0, "bf16": 12.0}
MIN_LOADS_BEFORE_ATOMIC = 2
MAX_FUSED_SEARCH_REGS = 64

# ---- H100 / H200 (sm_90) resources per SM ----------------------------------------------------
SM_REGS = 65536
SM_SMEM = 228 * 1024
BLOCK_SMEM_OPTIN = 227 * 1024
BLOCK_SMEM_RESERVE = 1024  # the runtime's per-block reservation
SM_THREADS = 2048
SM_BLOCKS = 32
REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256

DTYPES = {0: "f32", 1: "f16", 2: "bf16"}
LAYOUTS = {0: "abs", 1: "signed"}
ELEMS_PER_16B = {"f32": 4, "f16": 8, "bf16": 8}

HIST_KERNEL = "histogram_block_private_kernel"
SEARCH_KERNELS = ("search_prefix_kernel", "search_candidates_kernel", "search_finalize_kernel",
                  "search_fused_kernel")


def policy_constants(source_dir):
    """Integer constants of gpu_policy.hpp (block sizes, shared memory policy)."""
    path = os.path.join(source_dir, "internal", "klcal", "internal", "gpu_policy.hpp")
    consts = {}
    with open(path, encoding="utf-8") as f:
        for m in re.finditer(r"constexpr\s+[\w:]+\s+(\w+)\s*=\s*([0-9]+)\s*(\*\s*([0-9]+))?\s*;",
                             f.read()):
            value = int(m.group(2)) * (int(m.group(4)) if m.group(4) else 1)
            consts[m.group(1)] = value
    return consts


def run(cmd, cwd=None):
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def demangle(names):
    """Demangled names through c++filt when it exists (else the mangled names)."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return dict(zip(names, names))
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return dict(zip(names, out))


def cubins_of(build, arch, tmp):
    """Extracts the `arch` cubins of the klcal_cuda target's objects into tmp."""
    inputs = sorted(glob.glob(os.path.join(build, "CMakeFiles", "klcal_cuda.dir", "kernels",
                                           "*.o")))
    if not inputs:
        inputs = sorted(glob.glob(os.path.join(build, "**", "libklcal_cuda.a"), recursive=True))
    if not inputs:
        sys.exit(f"sass-report: no klcal_cuda objects or libklcal_cuda.a under {build}")
    for i, path in enumerate(inputs):
        out = os.path.join(tmp, str(i))
        os.makedirs(out)
        run([ARGS.cuobjdump, "-xelf", "all", os.path.abspath(path)], cwd=out)
    cubins = sorted(glob.glob(os.path.join(tmp, "*", f"*.{arch}.cubin")))
    if not cubins:
        sys.exit(f"sass-report: no {arch} code in {', '.join(inputs)}")
    return cubins


def resource_usage(cubin):
    """Function name -> {REG, SHARED, LOCAL, STACK} from cuobjdump -res-usage."""
    usage, name = {}, None
    for line in run([ARGS.cuobjdump, "-res-usage", cubin]).splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
            continue
        if name and "REG:" in line:
            usage[name] = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}
            name = None
    return usage


class Instr:
    def __init__(self, offset, text):
        self.offset = offset
        self.text = text
        body = re.sub(r"^@!?U?P\w+\s+", "", text)
        self.opcode = body.split()[0] if body else ""
        self.args = body[len(self.opcode):].strip()


def disassemble(cubin):
    """Function name -> (instructions, label -> offset) from nvdisasm."""
    funcs, name, labels = {}, None, {}
    pending = []
    for line in run([ARGS.nvdisasm, "-c", cubin]).splitlines():
        m = re.match(r"\.text\.(\S+):$", line)
        if m:
            name, labels = m.group(1), {}
            funcs[name] = ([], labels)
            continue
        if name is None:
            continue
        m = re.match(r"^(\.L_x_\d+):", line)
        if m:
            pending.append(m.group(1))
            continue
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;", line)
        if m:
            ins = Instr(int(m.group(1), 16), m.group(2))
            funcs[name][0].append(ins)
            for label in pending:
                labels[label] = ins.offset
            pending = []
    return funcs


def loops(instrs, labels):
    """Bodies of the backward branches: lists of instructions from the target to the branch."""
    out = []
    for ins in instrs:
        if not ins.opcode.startswith("BRA"):
            continue
        m = re.search(r"`\((\.L_x_\d+)\)", ins.args)
        if m and labels.get(m.group(1), ins.offset + 1) <= ins.offset:
            start = labels[m.group(1)]
            out.append([i for i in instrs if start <= i.offset <= ins.offset])
    return out


def is_load16(ins):
    return ins.opcode.startswith("LDG") and ".128" in ins.opcode


def is_shared_atomic(ins):
    return ins.opcode.startswith("ATOMS")


def loads_before_atomic(body):
    """Independent 16-byte loads issued since the previous iteration's last shared atomic and
    before this iteration's first one (the body read cyclically, so loads that the compiler
    hoisted to the end of the previous iteration count)."""
    last = max(i for i, ins in enumerate(body) if is_shared_atomic(ins))
    order = body[last + 1:] + body[:last + 1]
    written, count = set(), 0
    for ins in order:
        if is_shared_atomic(ins):
            break
        if is_load16(ins):
            addr = re.search(r"\[R(\d+)", ins.args)
            if addr and int(addr.group(1)) in written:
                continue  # its address depends on an earlier load: not independent
            dest = re.match(r"R(\d+)", ins.args)
            if dest:
                written.update(range(int(dest.group(1)), int(dest.group(1)) + 4))
            count += 1
    return count


def guess_dtype(body):
    """For kernels whose name does not carry the element type: the widening instructions."""
    ops = " ".join(i.opcode + " " + i.args for i in body)
    if "HADD2.F32" in ops:
        return "f16"
    if re.search(r"0x10000\b|0xffff0000|PRMT", ops):
        return "bf16"
    return "f32"


def blocks_per_sm(regs, smem_static, smem_dynamic, threads):
    warps = -(-threads // 32)
    regs_per_warp = -(-regs * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    by_regs = (SM_REGS // regs_per_warp) // warps if regs_per_warp else SM_BLOCKS
    # sm_90 cubins report the per-block reservation inside their static shared memory.
    smem = smem_static + smem_dynamic + (0 if smem_static >= BLOCK_SMEM_RESERVE
                                         else BLOCK_SMEM_RESERVE)
    if smem - BLOCK_SMEM_RESERVE > BLOCK_SMEM_OPTIN:
        return 0
    by_smem = SM_SMEM // smem if smem else SM_BLOCKS
    return min(by_regs, by_smem, SM_THREADS // threads, SM_BLOCKS)


def hist_shape(pretty):
    """(dtype, layout, tasks, with_stats) from a demangled histogram kernel name."""
    m = re.search(HIST_KERNEL + r"<\(klcal::dtype\)(\d), \(klcal::layout\)(\d), (\d+), (\w+)>",
                  pretty)
    if m:
        return (DTYPES[int(m.group(1))], LAYOUTS[int(m.group(2))], int(m.group(3)),
                m.group(4) == "true")
    m = re.search(HIST_KERNEL + r"<(\d+), (\w+)>", pretty)  # layout and type chosen at run time
    if m:
        return None, None, int(m.group(1)), m.group(2) == "true"
    return None, None, 0, False


def main():
    policy = policy_constants(ARGS.source_dir)
    hist_threads = policy.get("hist_block_threads", 256)
    search_threads = policy.get("search_block_threads", 256)
    # Dynamic shared memory of the typical launches the occupancy column assumes: a 2048-bin
    # histogram with as many copies as the 48 KiB target holds; a 2048-bin fused search.
    bins = 2048
    copies = max(1, min(policy.get("hist_max_sub_histograms", 4),
                        policy.get("hist_default_smem_bytes", 48 * 1024) // (bins * 4)))
    slots = 2 * hist_threads * 4  # the per-thread hot-bin and NaN/Inf slots
    copies = max(1, min(policy.get("hist_max_sub_histograms", 4),
                        (policy.get("hist_default_smem_bytes", 48 * 1024) - slots) // (bins * 4)))
    hist_dyn = copies * bins * 4 + slots
    s_bytes = -(-(bins + 1) * 8 // 16) * 16
    fused_dyn = 2 * s_bytes + (bins + 1) * 4

    failures, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for cubin in cubins_of(ARGS.build, ARGS.arch, tmp):
            usage = resource_usage(cubin)
            funcs = disassemble(cubin)
            pretty = demangle(list(funcs))
            for name, (instrs, labels) in funcs.items():
                nice = pretty[name]
                is_hist = HIST_KERNEL in nice
                search = next((k for k in SEARCH_KERNELS if k in nice), None)
                if not is_hist and not search:
                    continue
                res = usage.get(name, {})
                regs, smem = res.get("REG", 0), res.get("SHARED", 0)
                spills = sum(1 for i in instrs if i.opcode.startswith(("STL", "LDL")))
                spilled = spills > 0 or res.get("LOCAL", 0) > 0 or res.get("STACK", 0) > 0
                if is_hist:
                    dtype, layout, tasks, stats = hist_shape(nice)
                    base = "histogram"
                    if tasks:
                        base += f" {tasks}-task" + (" +stats" if stats else "")
                    dyn = hist_dyn
                    occ = blocks_per_sm(regs, smem, dyn, hist_threads)
                    cand = [b for b in loops(instrs, labels)
                            if any(map(is_load16, b)) and any(map(is_shared_atomic, b))]
                    # Per element type, the loop with the most 16-byte loads (the unrolled
                    # steady state), the shortest on a tie.
                    best = {}
                    for body in cand:
                        t = dtype or guess_dtype(body)
                        key = (sum(map(is_load16, body)), -len(body))
                        if t not in best or key > best[t][0]:
                            best[t] = (key, body)
                    if not best:
                        failures.append(f"{base}: no steady-state loop (16-byte loads + shared "
                                        f"atomics) found")
                    for t, (_, body) in sorted(best.items()):
                        elems = sum(map(is_load16, body)) * ELEMS_PER_16B[t]
                        per = len(body) / elems
                        early = loads_before_atomic(body)
                        label = f"{base} {t} {layout or 'abs+signed'}"
                        rows.append((label, regs, f"{smem}+{dyn}", spills, occ,
                                     f"{per:.2f}/elem", f"{len(body)}/{elems}", early))
                        # The +stats variant (the calibrator's one-pass add) is reported only.
                        if per > MAX_INSTR_PER_ELEM[t] and not stats:
                            failures.append(f"{label}: {per:.2f} instructions per element > "
                                            f"{MAX_INSTR_PER_ELEM[t]:g}")
                        if early < MIN_LOADS_BEFORE_ATOMIC:
                            failures.append(f"{label}: {early} independent 16-byte loads before "
                                            f"the first shared atomic < "
                                            f"{MIN_LOADS_BEFORE_ATOMIC}")
                    if spilled:
                        failures.append(f"{base}: spills ({spills} local loads/stores, "
                                        f"stack {res.get('STACK', 0)})")
                else:
                    tasks = re.search(r"<(\d+)>", nice)
                    label = f"{search}<{tasks.group(1) if tasks else '?'}>"
                    dyn = fused_dyn if search == "search_fused_kernel" else 0
                    occ = blocks_per_sm(regs, smem, dyn, search_threads)
                    # The candidate loop: the outermost loop that ends each candidate with a
                    # warp reduction (SHFL.DOWN); kernels with one candidate per warp have none.
                    cand = [b for b in loops(instrs, labels)
                            if any(i.opcode.startswith("SHFL.DOWN") for i in b)]
                    per = f"{max(map(len, cand))}/cand" if cand else "-"
                    rows.append((label, regs, f"{smem}+{dyn}", spills, occ, per, "-", "-"))
                    enforce = not ARGS.no_search_limits
                    if spilled and enforce:
                        failures.append(f"{label}: spills ({spills} local loads/stores, "
                                        f"stack {res.get('STACK', 0)})")
                    if (search == "search_fused_kernel" and regs > MAX_FUSED_SEARCH_REGS and
                            enforce):
                        failures.append(f"{label}: {regs} registers > {MAX_FUSED_SEARCH_REGS}")

    header = ("kernel (" + ARGS.arch + ")", "regs", "smem B (static+dyn)", "spill ops",
              "blocks/SM", "SASS instr", "loop/elems", "16B loads before ATOMS")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print(f"\nblocks/SM: H100/H200 (64K regs, 228 KiB smem, 2048 threads, 32 blocks per SM); "
          f"dynamic smem assumed: histogram {hist_dyn} B ({bins} bins x {copies} copies + "
          f"{slots} B of per-thread slots), fused "
          f"search {fused_dyn} B ({bins} bins), others 0. Limits: instr/elem f32 <= "
          f"{MAX_INSTR_PER_ELEM['f32']:g}, f16/bf16 <= {MAX_INSTR_PER_ELEM['f16']:g}, >= "
          f"{MIN_LOADS_BEFORE_ATOMIC} independent 16-byte loads before the first ATOMS (instr/elem "
          f"not enforced for +stats), no "
          f"spills, fused search <= {MAX_FUSED_SEARCH_REGS} registers"
          + (" (search limits not enforced)" if ARGS.no_search_limits else "") + ".")
    if failures:
        print("\nFAILED:")
        for f in failures:
            print("  " + f)
        return 1
    print("\nall limits hold")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", help="CMake build directory with the klcal_cuda target")
    parser.add_argument("--cuobjdump", default="cuobjdump")
    parser.add_argument("--nvdisasm", default="nvdisasm")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--no-search-limits", action="store_true",
                        help="report the search kernels without failing on their limits")
    parser.add_argument("--source-dir",
                        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ARGS = parser.parse_args()
    sys.exit(main())
