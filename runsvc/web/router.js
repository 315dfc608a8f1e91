// History-API routing: links inside the app change the address without reloading the page, and
// reload, back and deep links all land on the same page (the server answers index.html for each path).

const listeners = new Set();

export function currentLocation() {
  return { path: location.pathname, search: location.search, hash: location.hash };
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  notify();
}

export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function notify() {
  for (const listener of listeners) listener(currentLocation());
}

window.addEventListener('popstate', notify);

// Same-origin links to app pages are followed in place; downloads, API links, new-tab clicks are not.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest && event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/ui/')) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return; // in-page #L links
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});

// Where the login page may send someone back to: a path on this site, never another origin. Decided
// by how the browser itself resolves `next` (it reads `/\evil` as `//evil`, another host), not by
// looking at its first characters.
export function safeNext(next) {
  if (!next || !next.startsWith('/')) return '/';
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return '/';
  }
  if (url.origin !== location.origin || url.pathname.startsWith('/login')) return '/';
  return url.pathname + url.search + url.hash;
}
