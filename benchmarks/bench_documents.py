"""Reading the largest accepted upload of each format: wall time and peak memory (issue 29 item 4).

Files built here (tests/document_builders.py), each just inside the default DocumentLimits
(20 MB a file, 200 MB a .docx unpacks to, 2,000 PDF pages), read as the app reads them
(read_document, truncate=True: the app's "Read the first N characters"):

  text   19.9 MB of words (decoded in this process)
  html   19.9 MB page of small inline elements (the shape that took 4 GB as a BeautifulSoup tree)
  docx   a .docx whose document.xml is 199 MB (about 10 MB zipped)
  pdf    2,000 pages of their own streams, about 19.9 MB uncompressed
  pdf-shared  2,000 pages sharing one 1.1 MB content stream (443 kB: 21.7 s a page before)

Memory: the caller's peak RSS above its baseline (this process: the file's bytes, the text),
and the reading process's own peak RSS and address space (VmHWM / VmPeak, which
DocumentLimits.max_memory_bytes caps). Targets: time within max_seconds, the reading process
within max_memory_bytes, the caller within 400 MB above its baseline.

    python benchmarks/bench_documents.py [--quick]   (--quick: files a tenth of the size)
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)

import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(C.ROOT / "tests"))
import document_builders as B  # noqa: E402

CALLER_TARGET_MB = 400


def words(n_bytes: int) -> bytes:
    line = b"Mary went to the kitchen. John picked up the apple in the garden office.\n"
    return line * (n_bytes // len(line))


def cases(scale: float) -> list[tuple[str, str, bytes]]:
    mb = int(19.9e6 * scale)
    return [
        ("text", "words.txt", words(mb)),
        ("html", "page.html", B.html_page(mb)),
        ("docx", "body.docx", B.big_docx(int(199e6 * scale))),
        ("pdf", "pages.pdf", B.pdf(list(range(2000)), [B.text_stream(int(225 * scale), seed=i) for i in range(2000)],
                                    compress=False)),
        ("pdf-shared", "shared.pdf", B.shared_stream_pdf(2000, 20_000)),
    ]


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    C.setup(args)
    from rmt_core import DocumentError
    from rmt_core.io.documents import DocumentLimits, read_document, sandbox

    limits = DocumentLimits()
    answers: list[dict] = []
    original = sandbox._answer

    def recording(*a, **k):  # keep the reading process's own memory figures
        answer = original(*a, **k)
        answers.append(answer)
        return answer
    sandbox._answer = recording

    report = C.Report("bench_documents", "largest accepted upload of each format: time and peak memory",
                      quick=args.quick)
    report.header(args)
    rows = []
    for kind, name, data in cases(0.1 if args.quick else 1.0):
        answers.clear()
        C.release_free_memory()
        base = C.rss_bytes()
        C.reset_peak_rss()
        start = time.perf_counter()
        try:
            doc = read_document(name, data=data, limits=limits, truncate=True)
            outcome = f"{len(doc.text):,} chars"
        except DocumentError as exc:
            outcome = f"refused: {exc.limit or exc.problem[:40]}"
        seconds = time.perf_counter() - start
        caller_mb = (C.peak_rss_bytes() - base) / 1e6
        child = answers[0] if answers else {}
        child_rss = (child.get("peak_rss_bytes") or 0) / 1e6
        child_vm = (child.get("peak_vm_bytes") or 0) / 1e6
        rows.append([kind, f"{len(data) / 1e6:.2f}", seconds, caller_mb, child_rss if child else "-",
                     child_vm if child else "-", outcome])
        report.check(f"{kind} read time", seconds, limits.max_seconds, " s", digits=1)
        report.check(f"{kind} caller peak RSS above baseline", caller_mb, CALLER_TARGET_MB, " MB", digits=0)
        if child:
            report.check(f"{kind} reading process address space", child_vm, limits.max_memory_bytes / 1e6, " MB",
                         digits=0)
        del data
    report.table(["format", "file MB", "time s", "caller peak +MB", "reader RSS MB", "reader VM MB", "result"], rows,
                 title=f"read_document(truncate=True), default limits (max_chars {limits.max_chars:,}, "
                       f"max_memory_bytes {limits.max_memory_bytes / 1e6:,.0f} MB)")
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
