// The UI's view layer: Preact with htm tagged templates (no build step), from the vendored copies.
import { h, render, Fragment } from './vendor/preact-11.2.0/preact.mjs';
import htm from './vendor/htm-3.1.1/htm.mjs';

export { render, Fragment };
export {
  useState, useEffect, useRef, useCallback, useMemo, useLayoutEffect,
} from './vendor/preact-11.2.0/hooks.mjs';
export const html = htm.bind(h);
