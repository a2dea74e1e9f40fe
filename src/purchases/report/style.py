"""The report's stylesheet, inlined into the page (a Python string, not a package data file,
so that the wheel, the Glue job and the Lambda zip need no extra file)."""

CSS = """
:root {
  --ink: #1c2833; --muted: #5d6d7e; --line: #d5dbdb; --paper: #ffffff; --band: #f4f6f7;
  --ok: #1e8449; --bad: #c0392b; --warn: #b9770e; --accent: #2471a3;
  color-scheme: light;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--band); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
}
header, main { max-width: 1400px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 22px; padding-bottom: 6px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.where { color: var(--muted); margin: 0; overflow-wrap: anywhere; }
section {
  background: var(--paper); border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 18px; margin: 16px 0;
}
.note { color: var(--muted); margin: 4px 0 10px; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.tile { flex: 1 1 auto; min-width: 140px; background: var(--paper);
  border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.tile .k { color: var(--muted); font-size: 13px; }
.tile .v { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 7px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--band); font-weight: 600; vertical-align: bottom; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td.path { overflow-wrap: anywhere; min-width: 20em; }
.mono, td.id { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: 13px; }
td.id { white-space: nowrap; }
td.wrap { overflow-wrap: anywhere; min-width: 16em; }
#runs { font-size: 13.5px; }
td.reasons { overflow-wrap: anywhere; min-width: 24em; }
td.whole { overflow-wrap: anywhere; min-width: 9em; }
.status { font-weight: 600; white-space: nowrap; }
.status.succeeded, .ok { color: var(--ok); }
.status.failed, .bad { color: var(--bad); }
.status.interrupted, .status.running, .warn { color: var(--warn); }
details { border-top: 1px solid var(--line); padding: 6px 0; }
details > summary { cursor: pointer; font-weight: 600; overflow-wrap: anywhere; }
details .error { color: var(--bad); overflow-wrap: anywhere; }
.chart { width: 100%; min-width: 360px; height: auto; display: block; }
.when { white-space: nowrap; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart .axis { stroke: var(--muted); stroke-width: 1; }
.chart .tick { fill: var(--muted); font-size: 12px; }
.legend { list-style: none; padding: 0; margin: 6px 0 12px; display: flex; flex-wrap: wrap;
  gap: 4px 14px; font-size: 13px; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 16px; }
.flow { display: flex; flex-wrap: wrap; align-items: stretch; gap: 6px; margin: 8px 0; }
.stage { flex: 1 1 150px; border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px;
  background: var(--band); }
.stage .k { font-weight: 600; }
.stage .v { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.stage .d { color: var(--muted); font-size: 13px; }
.arrow { align-self: center; color: var(--muted); font-size: 20px; }
.checks { list-style: none; padding: 0; margin: 8px 0 0; }
.checks li { margin: 3px 0; overflow-wrap: anywhere; }
footer { max-width: 1400px; margin: 0 auto 30px; padding: 0 20px; color: var(--muted);
  font-size: 13px; }
@media (max-width: 640px) {
  header, main, footer { padding-left: 10px; padding-right: 10px; }
  section { padding: 12px 10px; }
  .arrow { transform: rotate(90deg); flex-basis: 100%; text-align: center; }
  .stage { flex-basis: 100%; }
}
"""
