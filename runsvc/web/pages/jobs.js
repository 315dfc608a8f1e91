// The jobs list (SPEC §15): every saved job by name, its schedule (the cron text and the next fire
// time in the browser's local time) and the status of its newest run. The list is read once per visit:
// jobs change rarely, and a job's own page is where its runs are followed live.

import { html, useEffect, useState } from '../lib.js';
import { api } from '../api.js';
import { hasRole, localDateTime } from '../format.js';
import { ErrorAlert, StatusBadge } from './common.js';

function ScheduleCell({ job }) {
  if (!job.schedule) return html`<span class="muted">none</span>`;
  const next = job.next_fires && job.next_fires[0];
  return html`
    <code class="cron">${job.schedule.cron}</code>
    ${job.schedule.timezone !== 'UTC' && html` <span class="muted">${job.schedule.timezone}</span>`}
    <span class="schedule-next">${job.schedule.enabled
      ? (next ? html`next <time datetime=${next}>${localDateTime(next)}</time>` : html`<span class="muted">no next fire</span>`)
      : html`<span class="muted">paused</span>`}</span>`;
}

export function JobsPage({ me }) {
  const [jobs, setJobs] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    api('GET', '/jobs').then((data) => setJobs(data.jobs), (e) => setError(e.message));
  }, []);

  return html`
    <main class="page">
      <div class="page-head">
        <h1>Jobs</h1>
        ${hasRole(me.user, 'operator') && html`<a class="button primary" href="/jobs/new">New job</a>`}
      </div>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${jobs === null && !error && html`<p class="muted">Loading jobs…</p>`}
      ${jobs !== null && html`
        <div class="table-wrap">
          <table class="jobs" aria-label="Jobs">
            <thead><tr>
              <th scope="col">Job</th><th scope="col">Schedule</th><th scope="col">Last run</th>
              <th scope="col" class="wide-only">Description</th>
            </tr></thead>
            <tbody>
              ${jobs.map((job) => html`
                <tr key=${job.id}>
                  <td><a href=${`/jobs/${job.id}`}>${job.name}</a></td>
                  <td class="schedule"><${ScheduleCell} job=${job} /></td>
                  <td>${job.last_run
                    ? html`<a href=${`/runs/${job.last_run.id}`} aria-label=${`${job.last_run.status}, run #${job.last_run.id}`}><${StatusBadge} status=${job.last_run.status} /></a>
                      <span class="time muted"> ${localDateTime(job.last_run.created_at)}</span>`
                    : html`<span class="muted">never run</span>`}</td>
                  <td class="name wide-only muted">${job.description}</td>
                </tr>`)}
            </tbody>
          </table>
          ${jobs.length === 0 && html`<p class="empty">No jobs yet.</p>`}
        </div>`}
    </main>`;
}
