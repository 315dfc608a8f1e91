// The log's view: only the rows near the viewport exist in the DOM (fixed row height, at most a few
// hundred row elements whatever the log's length), redrawn at most once per animation frame.
//
// Browsers clamp an element's height somewhere above ~15,000,000 px (33,554,431 px in Chromium, less
// elsewhere), so past MAX_SCROLL_PX the scrollable height stays at MAX_SCROLL_PX and the scroll position
// maps proportionally onto rows: the last lines stay reachable at any length.

import { renderLine } from './ansi.js';
import { STDERR, SYSTEM, STATE } from './model.js';
import { localTime } from '../format.js';

export const ROW_PX = 20; // must match .line's height in app.css
const MAX_SCROLL_PX = 15_000_000;
const OVERSCAN = 40; // rows rendered above and below the viewport
const KIND_CLASS = ['out', 'err', 'sys', 'state'];

function bisect(sorted, value) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Wrap each occurrence of `needle` (lowercase) in the element's text nodes in <mark>. An occurrence that
// straddles two colour spans is not marked; the line itself is still highlighted as a match.
function markText(element, needle) {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const nodes = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) nodes.push(node);
  for (const node of nodes) {
    const lower = node.data.toLowerCase();
    let at = lower.indexOf(needle);
    if (at < 0) continue;
    const parts = [];
    let from = 0;
    while (at >= 0) {
      if (at > from) parts.push(node.data.slice(from, at));
      const mark = document.createElement('mark');
      mark.textContent = node.data.slice(at, at + needle.length);
      parts.push(mark);
      from = at + needle.length;
      at = lower.indexOf(needle, from);
    }
    if (from < node.data.length) parts.push(node.data.slice(from));
    node.replaceWith(...parts);
  }
}

export class LogViewer {
  constructor(container, model, { onFollowChange = () => {} } = {}) {
    this.model = model;
    this.onFollowChange = onFollowChange;
    this.following = true;
    this.timestamps = false;
    this.highlighted = 0; // seq of the #L line
    this.matches = []; // sorted seqs of search matches
    this.currentMatch = 0;
    this.cache = new Map(); // line index → {node, key}
    this.frame = 0;
    this.spacerHeight = -1;
    this.lnDigits = 0;

    this.scroller = document.createElement('div');
    this.scroller.className = 'log-scroll';
    this.scroller.setAttribute('role', 'log');
    this.scroller.setAttribute('aria-label', 'Output');
    this.scroller.setAttribute('aria-live', 'off'); // a live region re-read on every redraw helps nobody
    this.scroller.tabIndex = 0;
    this.spacer = document.createElement('div');
    this.spacer.className = 'log-spacer';
    this.layer = document.createElement('div');
    this.layer.className = 'log-layer';
    this.spacer.append(this.layer);
    this.scroller.append(this.spacer);
    container.replaceChildren(this.scroller);

    this.scroller.addEventListener('scroll', () => {
      const following = this.atBottom();
      if (following !== this.following) {
        this.following = following;
        this.onFollowChange(following);
      }
      this.update();
    }, { passive: true });
    this.layer.addEventListener('click', (event) => {
      const fold = event.target.closest('button.fold');
      if (!fold) return;
      const index = Number(fold.closest('.line').dataset.seq) - 1;
      this.model.toggle(index);
      this.update();
    });
    this.resizeObserver = new ResizeObserver(() => this.update());
    this.resizeObserver.observe(this.scroller);
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.resizeObserver.disconnect();
  }

  update() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  atBottom() {
    const { scrollTop, clientHeight, scrollHeight } = this.scroller;
    return scrollTop + clientHeight >= scrollHeight - ROW_PX / 2;
  }

  geometry() {
    const rows = this.model.rows();
    const viewport = this.scroller.clientHeight;
    const fullHeight = rows * ROW_PX;
    const height = Math.min(fullHeight, MAX_SCROLL_PX);
    const maxTop = Math.max(0, rows - viewport / ROW_PX); // the first row (fractional) at the very end
    return { rows, viewport, fullHeight, height, maxTop, scaled: fullHeight > MAX_SCROLL_PX };
  }

  topRow(g, scrollTop) {
    if (!g.scaled) return scrollTop / ROW_PX;
    const range = g.height - g.viewport;
    return range > 0 ? Math.min(g.maxTop, (scrollTop / range) * g.maxTop) : 0;
  }

  scrollTopFor(g, top) {
    const clamped = Math.max(0, Math.min(g.maxTop, top));
    if (!g.scaled) return clamped * ROW_PX;
    return g.maxTop > 0 ? (clamped / g.maxTop) * (g.height - g.viewport) : 0;
  }

  setFollowing(following) {
    this.following = following;
    this.onFollowChange(following);
    this.update();
  }

  setTimestamps(on) {
    this.timestamps = on;
    this.update();
  }

  // Scroll so that line `seq` is in the middle of the view; open the sections holding it.
  goTo(seq, { highlight = false } = {}) {
    const index = seq - 1;
    if (index < 0 || index >= this.model.size) return false;
    this.model.reveal(index);
    if (highlight) this.highlighted = seq;
    this.renderSpacer();
    const g = this.geometry();
    const row = this.model.rowOf(index);
    if (this.following) {
      this.following = false;
      this.onFollowChange(false);
    }
    this.scroller.scrollTop = this.scrollTopFor(g, row - g.viewport / ROW_PX / 2 + 0.5);
    this.following = this.atBottom();
    this.onFollowChange(this.following);
    this.update();
    return true;
  }

  setMatches(matches, current, query = '') {
    this.query = query.toLowerCase();
    this.matches = matches;
    this.currentMatch = current;
    this.update();
  }

  renderSpacer() {
    const g = this.geometry();
    if (g.height !== this.spacerHeight) {
      this.spacer.style.height = `${g.height}px`;
      this.spacerHeight = g.height;
    }
    const digits = String(Math.max(this.model.size, 1)).length;
    if (digits !== this.lnDigits) {
      this.layer.style.setProperty('--ln-chars', String(Math.max(digits, 3)));
      this.lnDigits = digits;
    }
    return g;
  }

  render() {
    this.frame = 0;
    const g = this.renderSpacer();
    if (this.following) this.scroller.scrollTop = this.scroller.scrollHeight;
    const scrollTop = this.scroller.scrollTop;
    const top = this.topRow(g, scrollTop);
    const first = Math.max(0, Math.floor(top) - OVERSCAN);
    const last = Math.min(g.rows, Math.ceil(top + g.viewport / ROW_PX) + OVERSCAN);
    this.layer.style.transform = `translateY(${scrollTop - (top - first) * ROW_PX}px)`;
    const nodes = [];
    const keep = new Map();
    for (let row = first; row < last; row += 1) {
      const index = this.model.lineAt(row);
      const node = this.rowNode(index);
      keep.set(index, this.cache.get(index));
      nodes.push(node);
    }
    this.cache = keep;
    const children = this.layer.children;
    let same = children.length === nodes.length;
    for (let k = 0; same && k < nodes.length; k += 1) same = children[k] === nodes[k];
    if (!same) this.layer.replaceChildren(...nodes);
  }

  isMatch(seq) {
    const at = bisect(this.matches, seq);
    return at < this.matches.length && this.matches[at] === seq;
  }

  rowNode(index) {
    const model = this.model;
    const seq = index + 1;
    const loaded = model.loaded[index] === 1;
    const header = loaded && model.isHeader(index);
    const match = this.isMatch(seq);
    const key = `${loaded}|${this.timestamps}|${seq === this.highlighted}|${match ? this.query : ''}|`
      + `${seq === this.currentMatch}|${header ? model.collapsed[index] : ''}`;
    const cached = this.cache.get(index);
    if (cached && cached.key === key) return cached.node;

    const line = document.createElement('div');
    line.className = `line ${loaded ? KIND_CLASS[model.kind[index]] : 'pending'}`;
    if (seq === this.highlighted) line.classList.add('highlight');
    if (match) line.classList.add('match');
    if (seq === this.currentMatch) line.classList.add('current');
    line.dataset.seq = String(seq);
    const number = document.createElement('a');
    number.className = 'ln';
    number.href = `#L${seq}`;
    number.textContent = String(seq);
    line.append(number);
    if (this.timestamps) {
      const ts = document.createElement('span');
      ts.className = 'ts';
      ts.textContent = loaded ? localTime(model.ts[index]) : '';
      line.append(ts);
    }
    const text = document.createElement('span');
    text.className = 'tx';
    if (!loaded) {
      text.textContent = '…';
    } else if (header) {
      const fold = document.createElement('button');
      fold.type = 'button';
      fold.className = 'fold';
      const open = !model.collapsed[index];
      fold.setAttribute('aria-expanded', String(open));
      const title = document.createElement('span');
      renderLine(title, model.groupTitle(index));
      fold.append(open ? '▾ ' : '▸ ', title);
      text.append(fold);
    } else {
      const kind = model.kind[index];
      if (kind === STDERR) line.title = 'stderr';
      if (model.parent[index] >= 0 && model.groupEnd[model.parent[index]] === index) line.classList.add('group-end');
      if (kind === SYSTEM || kind === STATE) text.textContent = model.text[index];
      else renderLine(text, model.text[index]);
    }
    line.append(text);
    if (match && this.query) markText(text, this.query);
    this.cache.set(index, { node: line, key });
    return line;
  }
}
