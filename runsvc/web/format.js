// Dates and durations as people read them. Timestamps from the API are RFC 3339 UTC.

const pad = (n, width = 2) => String(n).padStart(width, '0');

export function localDateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function localDate(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function localTime(iso) {
  const d = new Date(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function duration(startIso, endIso, now = Date.now()) {
  if (!startIso) return '—';
  const end = endIso ? Date.parse(endIso) : now;
  const seconds = Math.max(0, Math.floor((end - Date.parse(startIso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${pad(seconds % 60)}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ${pad(minutes % 60)}m`;
  return `${Math.floor(hours / 24)}d ${pad(hours % 24)}h`;
}

export const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out', 'interrupted'];
export const ACTIVE = new Set(['queued', 'running']);

export function hasRole(user, minimum) {
  const rank = { viewer: 0, operator: 1, admin: 2 };
  return user && rank[user.role] >= rank[minimum];
}

// Labels as typed in a form: comma-separated, spaces around them ignored, empty ones skipped.
export function parseLabels(text) {
  return text.split(',').map((label) => label.trim()).filter((label) => label !== '');
}
