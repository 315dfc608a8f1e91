// Small pieces every page uses.

import { html, useEffect, useState } from '../lib.js';

// The current time, refreshed every second while `ticking` (durations of running runs).
export function useNow(ticking) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!ticking) return undefined;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [ticking]);
  return now;
}

export function ErrorAlert({ message }) {
  return html`<div class="alert" role="alert">${message}</div>`;
}

export function StatusBadge({ status, role, label }) {
  return html`<span class=${`badge st-${status}`} role=${role} aria-label=${label}>${status}</span>`;
}

export function NotFoundPage() {
  return html`
    <main class="page narrow">
      <h1>Page not found</h1>
      <p>There is no page at this address. <a href="/">Back to the runs</a>.</p>
    </main>`;
}

// A page a viewer does not reach (the API would refuse its calls, so none is made).
export function OperatorsOnlyPage({ what }) {
  return html`
    <main class="page narrow">
      <h1>Operators and admins only</h1>
      <p>${what} are for operators and admins; your role cannot open this page. <a href="/">Back to the runs</a>.</p>
    </main>`;
}

// A page the user's role does not reach (the API would refuse its calls, so none is made).
export function AdminOnlyPage({ what }) {
  return html`
    <main class="page narrow">
      <h1>Admins only</h1>
      <p>${what} are managed by admins; your role cannot open this page. <a href="/">Back to the runs</a>.</p>
    </main>`;
}
