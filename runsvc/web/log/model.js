// Every event of one run, in memory, indexed by seq - 1: strings for the text and timestamps, typed
// arrays for the rest. Events may arrive in any order (the tail first, older pages behind it, live
// events at the end); a seq already held is ignored, so nothing is ever shown twice.
//
// Groups: `::group::title` opens a section, `::endgroup::` closes the innermost one; sections nest.
// They are parsed forwards over the loaded prefix (seq 1 … n with no hole), so a section is known once
// every line before it has arrived. A section is collapsed by default once it has ended.

import { displayText } from './ansi.js';

export const STDOUT = 0;
export const STDERR = 1;
export const SYSTEM = 2;
export const STATE = 3;
const KINDS = { stdout: STDOUT, stderr: STDERR, system: SYSTEM, state: STATE };

const GROUP = '::group::';
const ENDGROUP = '::endgroup::';
const NOT_A_HEADER = -2;
const OPEN = -1;

function stateText(data) {
  let text = `status: ${data.status}`;
  if (data.exit_code !== null && data.exit_code !== undefined) text += `, exit code ${data.exit_code}`;
  if (data.reason) text += ` (${data.reason})`;
  return text;
}

export class LogModel {
  constructor() {
    this.size = 0; // highest seq held (lines 1 … size exist; some may not have arrived yet)
    this.count = 0; // how many have arrived
    this.text = []; // raw text, escapes included
    this.lower = []; // displayed text, lowercased: what search scans
    this.ts = [];
    this.capacity = 0;
    this.kind = new Uint8Array(0);
    this.loaded = new Uint8Array(0);
    this.groupEnd = new Int32Array(0); // for a header: index of its ::endgroup:: line, or OPEN
    this.parent = new Int32Array(0); // index of the innermost enclosing header, or -1
    this.collapsed = new Uint8Array(0);
    this.touched = new Set(); // headers the user opened or closed: auto-collapse leaves them alone
    this.parsed = 0; // lines 0 … parsed-1 have been through group parsing
    this.stack = []; // open headers at index `parsed`
    this.anyCollapsed = false;
    this.visible = null; // Int32Array of visible line indexes, or null when every line is visible
    this.visibleCount = 0;
  }

  grow(size) {
    if (size <= this.capacity) return;
    let capacity = Math.max(1024, this.capacity);
    while (capacity < size) capacity *= 2;
    const copy = (Type, old, fill) => {
      const next = new Type(capacity);
      if (fill !== undefined) next.fill(fill);
      next.set(old);
      return next;
    };
    this.kind = copy(Uint8Array, this.kind);
    this.loaded = copy(Uint8Array, this.loaded);
    this.groupEnd = copy(Int32Array, this.groupEnd, NOT_A_HEADER);
    this.parent = copy(Int32Array, this.parent, -1);
    this.collapsed = copy(Uint8Array, this.collapsed);
    this.capacity = capacity;
  }

  // Add events (objects of the API). Returns true when the structure changed (groups, collapsing).
  add(events) {
    let last = 0;
    for (const event of events) if (event.seq > last) last = event.seq;
    this.grow(last);
    const oldSize = this.size;
    for (const event of events) {
      const i = event.seq - 1;
      if (this.loaded[i]) continue;
      const text = event.kind === 'state' ? stateText(event.data || {}) : String(event.data);
      this.text[i] = text;
      this.lower[i] = displayText(text).toLowerCase();
      this.ts[i] = event.ts;
      this.kind[i] = KINDS[event.kind] ?? SYSTEM;
      this.loaded[i] = 1;
      this.count += 1;
    }
    if (last > this.size) this.size = last;
    const structural = this.parseGroups();
    if (!structural && this.visible && this.size > oldSize) this.appendVisible(oldSize);
    return structural;
  }

  isHeader(i) {
    return this.groupEnd[i] !== NOT_A_HEADER;
  }

  groupTitle(i) {
    return this.text[i].slice(GROUP.length);
  }

  // Group parsing over the newly contiguous prefix.
  parseGroups() {
    let changed = false;
    const { text, loaded, stack } = this;
    let i = this.parsed;
    for (; i < this.size && loaded[i]; i += 1) {
      const line = text[i];
      this.parent[i] = stack.length ? stack[stack.length - 1] : -1;
      if (line.charCodeAt(0) !== 58 || this.kind[i] > STDERR) continue; // ':'
      if (line.startsWith(GROUP)) {
        this.groupEnd[i] = OPEN;
        stack.push(i);
        changed = true;
      } else if (line.startsWith(ENDGROUP) && stack.length) {
        const header = stack.pop();
        this.parent[i] = header;
        this.groupEnd[header] = i;
        if (!this.touched.has(header)) this.collapsed[header] = 1;
        changed = true;
      }
    }
    this.parsed = i;
    if (changed) this.rebuildVisible();
    return changed;
  }

  hidden(i) {
    // Whether a collapsed section hides line i (its header itself stays visible).
    for (let p = this.parent[i]; p >= 0; p = this.parent[p]) if (this.collapsed[p]) return true;
    return false;
  }

  rebuildVisible() {
    this.anyCollapsed = this.collapsed.some((c) => c === 1);
    if (!this.anyCollapsed) {
      this.visible = null;
      return;
    }
    const visible = new Int32Array(Math.max(this.size, 1));
    let n = 0;
    for (let i = 0; i < this.size; ) {
      visible[n] = i;
      n += 1;
      if (this.collapsed[i] && this.groupEnd[i] >= 0) i = this.groupEnd[i] + 1;
      else if (this.collapsed[i]) i = this.size; // collapsed by the user while still open
      else i += 1;
    }
    this.visible = visible;
    this.visibleCount = n;
  }

  appendVisible(from) {
    // Lines past the old end: visible unless a collapsed section (still open) holds them.
    if (this.visible.length < this.size) {
      const bigger = new Int32Array(this.size * 2);
      bigger.set(this.visible.subarray(0, this.visibleCount));
      this.visible = bigger;
    }
    for (let i = from; i < this.size; i += 1) {
      if (i < this.parsed && this.hidden(i)) continue;
      this.visible[this.visibleCount] = i;
      this.visibleCount += 1;
    }
  }

  rows() {
    return this.visible ? this.visibleCount : this.size;
  }

  lineAt(row) {
    return this.visible ? this.visible[row] : row;
  }

  rowOf(i) {
    // The row showing line i (or the row of its collapsed ancestor's header).
    if (!this.visible) return i;
    let lo = 0;
    let hi = this.visibleCount - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.visible[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  toggle(header) {
    this.touched.add(header);
    this.collapsed[header] = this.collapsed[header] ? 0 : 1;
    this.rebuildVisible();
  }

  // Open every section holding line i (search and #L links do).
  reveal(i) {
    let changed = false;
    for (let p = this.parent[i]; p >= 0; p = this.parent[p]) {
      if (this.collapsed[p]) {
        this.collapsed[p] = 0;
        this.touched.add(p);
        changed = true;
      }
    }
    if (changed) this.rebuildVisible();
    return changed;
  }

  // Seqs of the loaded lines whose displayed text contains `query` (case-insensitive).
  search(query, from = 0, into = []) {
    const needle = query.toLowerCase();
    const { lower, loaded } = this;
    for (let i = from; i < this.size; i += 1) {
      if (loaded[i] && lower[i].includes(needle)) into.push(i + 1);
    }
    return into;
  }
}
