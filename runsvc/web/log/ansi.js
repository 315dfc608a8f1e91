// Turning one line of untrusted program output into what the log shows. Output is never parsed as HTML:
// text goes into the DOM with textContent / text nodes only.
//
// 1. Carriage returns: a line shows the text after its last `\r` that has text after it, so a progress
//    bar shows its final state (ansi_up does not handle `\r`).
// 2. Escape sequences other than SGR (cursor moves, erase, OSC window titles and hyperlinks, DCS, charset
//    switches, lone ESC) and C0 control characters other than tab are dropped, never shown raw.
// 3. SGR (16, 256 and 24-bit colours, bold, dim, italic, underline, reset) is parsed by ansi_up; the 16
//    colours and the attributes become classes, 256/24-bit colours are set through the CSSOM (the CSP
//    forbids style attributes).

import { AnsiUp } from '../vendor/ansi_up-6.0.6/ansi_up.js';

const parser = new AnsiUp();
parser.use_classes = true;

// CSI … final byte | OSC/DCS/SOS/PM/APC … (BEL | ST | end of line) | other ESC sequences | C0 controls.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\|$)|\x1b[ -/]*[0-~]?|[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f\x9b]/g;
const SGR = /^\x1b\[[0-9;]*m$/;
const NEEDS_WORK = /[\x00-\x08\x0b-\x1f\x7f\x9b]/;

export function collapseCarriageReturns(line) {
  if (line.indexOf('\r') < 0) return line;
  const parts = line.split('\r');
  for (let i = parts.length - 1; i >= 0; i -= 1) {
    if (parts[i] !== '') return parts[i];
  }
  return '';
}

// The line with SGR sequences kept and everything else dropped.
function keepOnlySgr(line) {
  return line.replace(ESCAPES, (match) => (SGR.test(match) ? match : ''));
}

// The text of the line as displayed (no escapes at all): what search looks at.
export function displayText(line) {
  if (!NEEDS_WORK.test(line)) return line;
  return collapseCarriageReturns(line).replace(ESCAPES, '');
}

function resetParser() {
  parser.bold = parser.faint = parser.italic = parser.underline = false;
  parser.fg = parser.bg = null;
  parser._buffer = '';
}

function colour(span, property, value, suffix) {
  if (!value) return;
  if (value.class_name !== 'truecolor') span.classList.add(`${value.class_name}-${suffix}`);
  else span.style[property] = `rgb(${value.rgb.join(',')})`;
}

// Fill `element` with the rendered line.
export function renderLine(element, line) {
  if (!NEEDS_WORK.test(line)) {
    element.textContent = line;
    return;
  }
  const cleaned = keepOnlySgr(collapseCarriageReturns(line));
  if (cleaned.indexOf('\x1b') < 0) {
    element.textContent = cleaned;
    return;
  }
  resetParser(); // every line starts plain: lines are rendered independently, in any order
  parser.append_buffer(cleaned);
  const nodes = [];
  for (;;) {
    const packet = parser.get_next_packet();
    if (packet.kind === 0 || packet.kind === 2) break; // end of string, or an incomplete sequence
    if (packet.kind === 1) {
      const fragment = parser.with_state(packet);
      if (!fragment.bold && !fragment.faint && !fragment.italic && !fragment.underline && !fragment.fg && !fragment.bg) {
        nodes.push(document.createTextNode(fragment.text));
        continue;
      }
      const span = document.createElement('span');
      span.textContent = fragment.text;
      if (fragment.bold) span.classList.add('ansi-bold');
      if (fragment.faint) span.classList.add('ansi-faint');
      if (fragment.italic) span.classList.add('ansi-italic');
      if (fragment.underline) span.classList.add('ansi-underline');
      colour(span, 'color', fragment.fg, 'fg');
      colour(span, 'backgroundColor', fragment.bg, 'bg');
      nodes.push(span);
    } else if (packet.kind === 5) {
      parser.process_ansi(packet);
    }
  }
  resetParser();
  element.replaceChildren(...nodes);
}
