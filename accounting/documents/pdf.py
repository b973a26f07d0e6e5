"""The PDF drawing of a :class:`~accounting.documents.view.DocumentView`, with fpdf2 (pure Python).

**Fonts.** DejaVu Sans (shipped in ``fonts/``, Bitstream Vera licence) with Noto Sans CJK JP as
its fallback (SIL Open Font License 1.1, the data-only wheels ``noto-cjk-sans-jp-regular`` and
``-bold``), each embedded as a subset of the glyphs a document uses: Latin with its extensions,
Greek, Cyrillic, Hebrew, Chinese, Japanese and Korean print as stored. A character neither font
has a glyph for (or a control character) is neither dropped nor guessed at: it is written as
``<U+XXXX>``, so two different account ids never print the same, and the page then says so in a
footnote. The PDF's title and subject (Unicode in the document information) carry the document
id and the account id exactly, and the HTML rendition shows every character as stored.
"""

from __future__ import annotations

import unicodedata
from functools import cache
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

from fontTools.ttLib import TTFont
from fpdf import FPDF, FontFace
from fpdf.enums import Align, TableBordersLayout, XPos, YPos

if TYPE_CHECKING:
    from accounting.documents.view import DocumentView

FONT = "DejaVuSans"
FALLBACK = "NotoSansCJK"
_FONT_FILES = {
    (FONT, ""): ("accounting.documents", "fonts/DejaVuSans.ttf"),
    (FONT, "B"): ("accounting.documents", "fonts/DejaVuSans-Bold.ttf"),
    (FALLBACK, ""): ("noto_cjk_sans_jp_regular", "NotoSansCJKjp-Regular.otf"),
    (FALLBACK, "B"): ("noto_cjk_sans_jp_bold", "NotoSansCJKjp-Bold.otf"),
}
_LINE_COLUMNS = ("Description", "Item", "Tier", "Quantity", "Unit", "Unit price", "Amount")
_LINE_WIDTHS = (29, 12, 5, 19, 12, 11, 12)
_LINE_ALIGN = ("LEFT", "LEFT", "RIGHT", "RIGHT", "LEFT", "RIGHT", "RIGHT")
_GREY = (85, 85, 85)
_RED = (176, 0, 0)


class PdfText:
    """Makes any text printable in the core font, remembering whether it had to replace anything."""

    def __init__(self) -> None:
        self.replaced = False

    def __call__(self, text: str) -> str:
        out: list[str] = []
        covered = _covered()
        for char in text:
            if (char.isprintable() or unicodedata.category(char) == "Zs") and ord(char) in covered:
                out.append(char)
            elif char in "\n\t":
                out.append(" ")
            else:
                out.append(f"<U+{ord(char):04X}>")
                self.replaced = True
        return "".join(out)


@cache
def _font_path(family: str, style: str) -> Path:
    package, name = _FONT_FILES[family, style]
    with as_file(files(package) / name) as path:  # installed as files: no copy is made
        return Path(path)


@cache
def _covered() -> frozenset[int]:
    """The code points the fonts have a glyph for, in both styles (a document uses both)."""
    regular = {family: set(_cmap(family, "")) & set(_cmap(family, "B")) for family in (FONT, FALLBACK)}
    return frozenset(regular[FONT] | regular[FALLBACK])


def _cmap(family: str, style: str) -> dict[int, str]:
    cmap: dict[int, str] = TTFont(_font_path(family, style), lazy=True).getBestCmap()
    return cmap


class _DocumentPdf(FPDF):
    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_text = footer_text
        for family, style in _FONT_FILES:
            self.add_font(family, style, _font_path(family, style))
        self.set_fallback_fonts([FALLBACK], exact_match=False)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.set_text_color(*_GREY)
        self.cell(0, 5, f"{self.footer_text} - page {self.page_no()}/{{nb}}", align=Align.C)


def render_view_pdf(view: DocumentView) -> bytes:
    """The view as an A4 PDF."""
    text = PdfText()
    pdf = _DocumentPdf(text(view.title))
    pdf.set_title(view.title)
    pdf.set_subject(f"account {view.account_id}, period {view.period_id}")
    pdf.set_creator("Reckon")
    pdf.set_creation_date(view.dated)  # never the clock: the same document, the same bytes
    pdf.set_lang("en")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()

    if view.banner:
        pdf.set_font(FONT, style="B", size=16)
        pdf.set_text_color(*_RED)
        pdf.cell(0, 9, text(view.banner), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0)
    pdf.set_font(FONT, style="B", size=15)
    pdf.multi_cell(0, 8, text(view.heading), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    _parties(pdf, view, text)

    pdf.set_font(FONT, size=8)
    with pdf.table(
        col_widths=(22, 78),
        borders_layout=TableBordersLayout.NONE,
        first_row_as_headings=False,
        text_align="LEFT",
        line_height=5,
    ) as facts:
        for label, value in view.facts:
            row = facts.row()
            row.cell(text(label), style=FontFace(color=_GREY))
            row.cell(text(value))

    for notice in view.notices:
        pdf.ln(2)
        pdf.set_font(FONT, style="B", size=9)
        pdf.set_fill_color(255, 243, 224)
        pdf.multi_cell(
            0, 5, text(notice), fill=True, padding=2, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
    pdf.set_fill_color(255)  # tables fill their cells with the current colour
    pdf.ln(3)

    pdf.set_font(FONT, size=9)
    with pdf.table(
        col_widths=_LINE_WIDTHS,
        text_align=_LINE_ALIGN,
        borders_layout=TableBordersLayout.HORIZONTAL_LINES,
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        line_height=5,
        padding=1,
    ) as lines:
        heading = list(_LINE_COLUMNS)
        heading[-1] = f"Amount ({view.currency})"
        lines.row([text(name) for name in heading])
        for line in view.rows:
            lines.row(
                [
                    text(value)
                    for value in (
                        line.description,
                        line.item,
                        line.tier,
                        line.quantity,
                        line.unit,
                        line.unit_price,
                        line.amount,
                    )
                ]
            )
        if not view.rows:
            lines.row().cell("No billable usage in this period.", colspan=len(_LINE_COLUMNS))

    pdf.ln(2)
    with pdf.table(
        col_widths=(70, 30),
        width=110,
        align=Align.R,
        borders_layout=TableBordersLayout.NONE,
        first_row_as_headings=False,
        text_align=("LEFT", "RIGHT"),
        line_height=6,
    ) as totals:
        pdf.set_font(FONT, size=10)
        totals.row([text("Subtotal"), text(view.subtotal)])
        bold = FontFace(emphasis="BOLD")
        row = totals.row(style=bold)
        row.cell(text(view.total_label))
        row.cell(text(view.total))

    if text.replaced:
        pdf.ln(4)
        pdf.set_font(FONT, size=8)
        pdf.set_text_color(*_GREY)
        pdf.multi_cell(
            0,
            4,
            "<U+XXXX> stands for a character this PDF's font cannot show; the document's properties "
            "(title, subject) and the HTML rendition show it as stored.",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
    return bytes(pdf.output())


def _parties(pdf: FPDF, view: DocumentView, text: PdfText) -> None:
    """The seller (when configured) and the buyer side by side, each under its label."""
    pdf.set_font(FONT, size=9)
    columns = [("From", view.seller), ("To", view.buyer)] if view.seller else [("To", view.buyer)]
    with pdf.table(
        col_widths=(1,) * len(columns),
        width=90 * len(columns),
        borders_layout=TableBordersLayout.NONE,
        first_row_as_headings=False,
        text_align="LEFT",
        line_height=5,
    ) as parties:
        labels = parties.row(style=FontFace(color=_GREY))
        for label, _ in columns:
            labels.cell(text(label))
        names = parties.row()
        for _, lines in columns:
            names.cell("\n".join(text(line) for line in lines))
    pdf.ln(2)
