"""Writes the GPU check's tables into docs/benchmarks.md, between the gpu-check markers of its "GPU results".

Reads benchmarks' JSON results (unet, sampling, training, student, channels_last and fused_norm) from a
results folder and the check's step log (one "STATUS<TAB>step<TAB>note" line per step), and replaces the
text between `<!-- gpu-check:begin -->` and `<!-- gpu-check:end -->` with: the device, the date, what ran
and what did not (with why), and one table per benchmark. A missing result file is reported, not fatal.

usage: python benchmarks/gpu_report.py RESULTS_DIR STEP_LOG DOC_MD
"""

import json
import sys
from pathlib import Path

BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"


def fmt_s(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_x(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def compiled_note(record: dict, names) -> str:
    flags = [f"{n}: {'yes' if record[n]['ran_compiled'] else 'NO (eager fallback)'}" for n in names
             if n in record and record[n].get("ran_compiled") is not None]
    return "; ".join(flags) or "not asked"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def unet_section(data: dict) -> list[str]:
    names = ("corrdiff", "corrdiff fast", "reference", "reference fast")
    rows = []
    for r in data["records"]:
        fast = r["corrdiff fast"]
        rows.append([f"{r['size']}² b{r['batch']} {r['precision']}", r["kind"]]
                    + [fmt_s(r.get(n, {}).get("median_s")) for n in names]
                    + [fmt_x(r.get("ratio_fast_over_reference")), fmt_x(r.get("ratio_fast_over_reference_fast")),
                       f"{fast['tflops']:.3g}", f"{fast.get('fraction_of_dense_peak', 0):.0%}",
                       compiled_note(r, names)])
    peaks = ", ".join(f"{p}: {d['best']:.3g} TFLOP/s" for p, d in data.get("dense_peak_tflops", {}).items())
    lines = [f"UNet (`bench_unet.py`; forward in eval mode under no_grad, forward+backward in train mode), median "
             f"of {data['repeats']} interleaved turns; measured dense peak {peaks}. Ratios are times (below 1: "
             "corrdiff fast is faster). Target: bf16 forward ≥ 40% of the dense peak.", ""]
    lines += table(["case", "pass", "corrdiff", "corrdiff fast", "reference", "reference fast", "fast/ref",
                    "fast/ref fast", "TFLOP/s fast", "of peak", "ran compiled"], rows)
    if data.get("out_of_memory"):
        lines += ["", "Out of memory, not measured: " + "; ".join(data["out_of_memory"]) + "."]
    return lines


def sampling_section(data: dict) -> list[str]:
    names = ("corrdiff", "corrdiff fast", "reference", "reference fast")
    rows = [[f"{r['size']}² ×{r['batch']}"] + [fmt_s(r.get(n, {}).get("per_member_s")) for n in names]
            + [fmt_x(r.get("ratio_fast_over_reference")), fmt_x(r.get("ratio_fast_over_reference_fast")),
               compiled_note(r, names)] for r in data["records"]]
    steps = data["records"][0]["steps"] if data["records"] else "?"
    lines = [f"Sampling (`bench_sampling.py`), seconds per member, {steps} Heun steps. Targets: fast/ref ≤ 0.5 "
             "(2× the reference's plain path), fast/ref fast ≤ 0.83 (1.2×).", ""]
    return lines + table(["case", "corrdiff", "corrdiff fast", "reference", "reference fast", "fast/ref",
                          "fast/ref fast", "ran compiled"], rows)


def training_section(data: dict) -> list[str]:
    names = ("corrdiff", "corrdiff fast", "reference", "reference fast")
    rows = [[f"{r['kind']} {r['size']}² b{r['batch']} {r['precision']}"]
            + [f"{r[n]['samples_per_s']:.2f}" if n in r else "-" for n in names]
            + [fmt_x(r.get("speedup_fast_over_reference")), fmt_x(r.get("speedup_fast_over_reference_fast"))]
            for r in data["records"]]
    lines = ["Training (`bench_training.py`, loader included), samples/s; speed-ups above 1: corrdiff faster. "
             "Target: ≥ 1.3 against the reference.", ""]
    return lines + table(["step", "corrdiff", "corrdiff fast", "reference", "reference fast", "fast/ref",
                          "fast/ref fast"], rows)


def student_section(data: dict) -> list[str]:
    rows = [[f"{r['size']}²", r["contender"], str(r["nfe"]), fmt_s(r["per_member_s"]),
             f"{fmt_x(r['speedup_vs_dpmpp_2m_7'])}×"] for r in data["records"]]
    lines = [f"Few-step student (`bench_student.py`, preset {data['preset']}), seconds per member (regression "
             "included), the teacher's samplers against the consistency student; speed-up above 1: faster than "
             "teacher `dpmpp_2m` at 7 NFE.", ""]
    return lines + table(["grid", "sampler", "NFE", "s / member", "speed-up vs dpmpp_2m 7"], rows)


def layout_section(data: dict) -> list[str]:
    rows = [[r["case"], fmt_s(r["nchw_s"]), fmt_s(r["channels_last_s"]), fmt_x(r["channels_last_s"] / r["nchw_s"])]
            for r in data["records"]]
    lines = ["Memory layout of corrdiff's denoiser on this device (the measurement that decides "
             "`corrdiff.fast_path.CHANNELS_LAST_AUTO[\"cuda\"]`): " + data["recommendation"], ""]
    return lines + table(["case", "NCHW", "channels-last", "ratio"], rows)


def fused_norm_section(data: dict) -> list[str]:
    names = ("plain_norm", "fused_norm")
    rows = [[r["case"], fmt_s(r["plain_norm_s"]), fmt_s(r["fused_norm_s"]),
             fmt_x(r["fused_norm_s"] / r["plain_norm_s"]),
             compiled_note({n: {"ran_compiled": r.get(f"{n}_ran_compiled")} for n in names}, names)]
            for r in data["records"]]
    lines = ["Fused GroupNorm+SiLU against torch's GroupNorm then SiLU, both compiled (`bench_layout.py --fused-norm`; "
             "the measurement that decides `corrdiff.fast_path.FUSED_NORM_AUTO[\"cuda\"]`): " + data["recommendation"], ""]
    return lines + table(["case", "plain", "fused", "ratio", "ran compiled"], rows)


SECTIONS = {"unet": unet_section, "sampling": sampling_section, "training": training_section,
            "student": student_section, "channels_last": layout_section, "fused_norm": fused_norm_section}


def report(results: Path, step_log: Path) -> list[str]:
    steps = [line.split("\t") for line in step_log.read_text().splitlines() if line.count("\t") >= 2]
    facts = {}
    for name in SECTIONS:
        path = results / f"{name}.json"
        if path.exists():
            facts = facts or json.loads(path.read_text())
    lines = [f"Measured by `make gpu-check` on **{facts.get('device', 'unknown device')}**, {facts.get('date', '?')}, "
             f"torch {facts.get('torch', '?')}, PhysicsNeMo {facts.get('physicsnemo') or 'absent'}.", "",
             "What ran:", ""]
    lines += [f"- {status}: {step}{f' — {note}' if note.strip() else ''}" for status, step, note in steps]
    for name, section in SECTIONS.items():
        path = results / f"{name}.json"
        lines += [""]
        if not path.exists():
            lines += [f"No `{name}` results (see the steps above)."]
            continue
        try:
            lines += section(json.loads(path.read_text()))
        except (KeyError, ValueError, TypeError) as err:
            lines += [f"`{name}` results could not be tabled ({type(err).__name__}: {err})."]
    return lines


def write(doc: Path, lines: list[str]) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} … {END} markers in its GPU results section; add them")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    write(Path(sys.argv[3]), report(Path(sys.argv[1]), Path(sys.argv[2])))
    print(f"written {sys.argv[3]}")
