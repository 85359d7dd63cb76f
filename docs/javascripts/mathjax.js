// MathJax 3 configuration for pymdownx.arithmatex (generic mode): typeset only the
// \( ... \) and \[ ... \] spans that arithmatex wraps in class="arithmatex".
// MathJax itself (javascripts/mathjax/tex-chtml.js, loaded after this file) and its fonts are
// served by the site: docs/hooks.py copies them in at build time, so math renders offline.

// MathJax 3 cannot break a formula across lines: an inline formula wider than its paragraph (on a
// phone) would make the whole page wider than the screen. Such a formula gets class "wide-math",
// which makes it scroll sideways inside the column (stylesheets/extra.css); re-checked on resize.
function fitInlineMath() {
  for (const math of document.querySelectorAll("mjx-container:not([display='true'])")) {
    math.classList.remove("wide-math");
    const block = math.parentElement && math.parentElement.closest("p, li, td, th, dd, div");
    if (block && math.getBoundingClientRect().width > block.clientWidth) math.classList.add("wide-math");
  }
}

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  startup: {
    pageReady: () => MathJax.startup.defaultPageReady().then(fitInlineMath),
  },
};

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(fitInlineMath, 100);
});

// Re-typeset after Material's instant navigation swaps the page content. Not on the first page:
// MathJax typesets it on startup, and clearing its cache after that would drop the CSS that draws
// the characters already on the page (the formulas would be blank).
let firstPage = true;
document$.subscribe(() => {
  if (firstPage) {
    firstPage = false;
    return;
  }
  if (!window.MathJax.startup || !window.MathJax.typesetPromise) return;
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise().then(fitInlineMath);
});
