// CrystalForge explorer: sortable and filterable tables, and the 3D structure viewer (3Dmol.js).
// Plain DOM code, no build step: the pages must open from file:// on a machine without internet.
"use strict";

function cellValue(row, index) {
  const cell = row.cells[index];
  const raw = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
  const number = parseFloat(raw);
  return raw !== "" && !Number.isNaN(number) && /^-?[0-9.eE+-]+$/.test(raw) ? number : raw;
}

function sortBy(table, index, header) {
  const body = table.tBodies[0];
  const ascending = header.dataset.order !== "asc";
  for (const th of table.tHead.rows[0].cells) delete th.dataset.order;
  header.dataset.order = ascending ? "asc" : "desc";
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a, index), y = cellValue(b, index);
    if (x === "" || y === "") return x === "" ? 1 : -1;  // missing values last
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return ascending ? order : -order;
  });
  rows.forEach((row) => body.appendChild(row));
}

function applyFilters(tableId) {
  const table = document.getElementById(tableId);
  const text = document.querySelector(`input.filter[data-table="${tableId}"]`);
  const only = document.querySelectorAll(`input.only[data-table="${tableId}"]`);
  const max = document.querySelectorAll(`input.max[data-table="${tableId}"]`);
  const needle = text ? text.value.trim().toLowerCase() : "";
  for (const row of table.tBodies[0].rows) {
    let shown = !needle || row.textContent.toLowerCase().includes(needle);
    only.forEach((box) => { if (box.checked && row.dataset[box.dataset.column] !== "yes") shown = false; });
    max.forEach((input) => {
      const limit = parseFloat(input.value);
      const value = parseFloat(row.dataset[input.dataset.column]);
      if (!Number.isNaN(limit) && !(value <= limit)) shown = false;
    });
    row.hidden = !shown;
  }
}

function setUpTables() {
  document.querySelectorAll("table.sortable").forEach((table) => {
    Array.from(table.tHead.rows[0].cells).forEach((th, index) => {
      th.addEventListener("click", () => sortBy(table, index, th));
    });
  });
  document.querySelectorAll("input.filter, input.only, input.max").forEach((input) => {
    input.addEventListener("input", () => applyFilters(input.dataset.table));
  });
}

function setUpViewer() {
  const element = document.getElementById("viewer");
  const source = document.getElementById("cif");
  if (!element || !source || typeof $3Dmol === "undefined") return;
  const viewer = $3Dmol.createViewer(element, { backgroundColor: "white" });
  const supercell = document.getElementById("supercell");
  const bonds = document.getElementById("bonds");
  function draw() {
    viewer.clear();
    const model = viewer.addModel(JSON.parse(source.textContent), "cif", { doAssembly: true, normalizeAssembly: true, duplicateAssemblyAtoms: true });
    // Jmol's colours: 3Dmol's default scheme lacks many elements (Sr and V both came out pink)
    const style = { sphere: { scale: 0.3, colorscheme: "Jmol" } };
    if (bonds.checked) style.stick = { radius: 0.12, colorscheme: "Jmol" };
    viewer.setStyle({}, style);
    viewer.addUnitCell(model, { box: { color: "black" } });
    if (supercell.checked) viewer.replicateUnitCell(2, 2, 2, model);
    viewer.zoomTo();
    viewer.render();
    element.dataset.atoms = String(viewer.selectedAtoms({}).length);
    showLegend(viewer.selectedAtoms({}));
  }
  function showLegend(atoms) {  // the element colours the style draws with (Jmol's)
    const legend = document.getElementById("legend");
    if (!legend) return;
    const colours = $3Dmol.elementColors.Jmol || {};
    const elements = Array.from(new Set(atoms.map((atom) => atom.elem))).sort();
    legend.replaceChildren(...elements.map((symbol) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      const colour = colours[symbol] !== undefined ? colours[symbol] : 0xcccccc;
      swatch.style.background = "#" + colour.toString(16).padStart(6, "0");
      item.append(swatch, symbol);
      return item;
    }));
  }
  supercell.addEventListener("change", draw);
  bonds.addEventListener("change", draw);
  draw();
  window.crystalforgeViewer = viewer;  // for the browser tests
}

function setUpHullClicks() {
  // a click on a candidate's point in a hull diagram opens its page (customdata: its URL)
  document.querySelectorAll(".hull .js-plotly-plot").forEach((plot) => {
    plot.on("plotly_click", (event) => {
      const url = event.points.length ? event.points[0].customdata : null;
      if (typeof url === "string" && url.endsWith(".html")) window.location.href = url;
    });
  });
}

document.addEventListener("DOMContentLoaded", () => { setUpTables(); setUpViewer(); setUpHullClicks(); });
