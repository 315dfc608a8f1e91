// Users (admin): the table of users, a form to create one, and per user: edit (role, new password),
// disable or enable. Buttons carry the username in their names ("Edit alice").

import { html, useEffect, useState } from '../lib.js';
import { api } from '../api.js';
import { localDateTime } from '../format.js';
import { ErrorAlert } from './common.js';

const ROLES = ['viewer', 'operator', 'admin'];

export function UsersPage() {
  const [users, setUsers] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [editing, setEditing] = useState(null);

  const load = async () => {
    try {
      setUsers((await api('GET', '/users')).users);
    } catch (e) {
      setError(e.message);
    }
  };
  useEffect(() => { load(); }, []);

  const act = async (work, done) => {
    setError(null);
    setNotice(null);
    try {
      await work();
      if (done) setNotice(done);
      await load();
      return true;
    } catch (e) {
      setError(e.message);
      return false;
    }
  };

  const create = async (event) => {
    event.preventDefault();
    const form = event.target;
    const username = form.username.value;
    const ok = await act(() => api('POST', '/users', {
      username, password: form.password.value, role: form.role.value,
    }), `Created ${username}.`);
    if (ok) form.reset();
  };

  const save = async (event, user) => {
    event.preventDefault();
    const form = event.target;
    const body = {};
    if (form.role.value !== user.role) body.role = form.role.value;
    if (form.password.value) body.password = form.password.value;
    if (!Object.keys(body).length) {
      setEditing(null);
      return;
    }
    if (await act(() => api('PATCH', `/users/${user.id}`, body), `Saved ${user.username}.`)) setEditing(null);
  };

  const setDisabled = (user, disabled) =>
    act(() => api('PATCH', `/users/${user.id}`, { disabled }), `${disabled ? 'Disabled' : 'Enabled'} ${user.username}.`);

  return html`
    <main class="page">
      <div class="page-head"><h1>Users</h1></div>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      <div class="users-layout">
        <div class="table-wrap">
          <table class="users">
            <thead><tr>
              <th scope="col">User</th><th scope="col">Role</th><th scope="col">State</th>
              <th scope="col" class="wide-only">Created</th><th scope="col"><span class="visually-hidden">Actions</span></th>
            </tr></thead>
            <tbody>
              ${(users || []).map((user) => html`
                <tr key=${user.id}>
                  <td>${user.username}</td>
                  <td>${user.role}</td>
                  <td>${user.disabled ? html`<span class="badge st-cancelled">disabled</span>` : 'active'}</td>
                  <td class="time wide-only">${localDateTime(user.created_at)}</td>
                  <td class="actions">
                    <button type="button" aria-label=${`Edit ${user.username}`}
                      onClick=${() => setEditing(editing === user.id ? null : user.id)}>Edit</button>
                    ${user.disabled
                      ? html`<button type="button" aria-label=${`Enable ${user.username}`} onClick=${() => setDisabled(user, false)}>Enable</button>`
                      : html`<button type="button" class="danger" aria-label=${`Disable ${user.username}`} onClick=${() => setDisabled(user, true)}>Disable</button>`}
                  </td>
                </tr>
                ${editing === user.id && html`
                  <tr class="editor" key=${`edit-${user.id}`}><td colspan="5">
                    <form class="inline-form" onSubmit=${(e) => save(e, user)}>
                      <label>Role of ${user.username}
                        <select name="role" value=${user.role}>${ROLES.map((r) => html`<option value=${r}>${r}</option>`)}</select>
                      </label>
                      <label>New password for ${user.username}
                        <input name="password" type="password" minlength="8" autocomplete="new-password" placeholder="unchanged" />
                      </label>
                      <button type="submit" class="primary">Save</button>
                      <button type="button" onClick=${() => setEditing(null)}>Close</button>
                    </form>
                  </td></tr>`}`)}
            </tbody>
          </table>
        </div>
        <form class="card form create-user" onSubmit=${create}>
          <h2>Create a user</h2>
          <label for="new-username">Username</label>
          <input id="new-username" name="username" required maxlength="64" pattern="[A-Za-z0-9_.\\-]+" autocomplete="off" />
          <label for="new-password">Password</label>
          <input id="new-password" name="password" type="password" required minlength="8" autocomplete="new-password" />
          <label for="new-role">Role</label>
          <select id="new-role" name="role">${ROLES.map((r) => html`<option value=${r} selected=${r === 'operator'}>${r}</option>`)}</select>
          <div class="form-actions"><button type="submit" class="primary">Create user</button></div>
        </form>
      </div>
    </main>`;
}
