/**
 * The archive page (plain ES module, no framework). It signs the user in at the identity
 * provider (authorization code + PKCE, DPoP-bound token: the SDK's login module), derives each
 * document's key from the share nodes through the coordinator (KmaasClient), and encrypts and
 * decrypts in this page. The archive's server only ever receives envelopes.
 *
 * Every call to the archive's own API carries the same DPoP-bound token and a fresh proof made
 * with the session's non-extractable key (createDpopProof).
 *
 * Anything that comes from the server or another user (names, types, tenants) is put in the page
 * as text (textContent), never as HTML.
 */
import {
  KmaasClient,
  KmaasError,
  MemoryPinStore,
  beginLogin,
  completeLogin,
  createDpopProof,
  currentSession,
  logout,
} from '/build/kmaas-sdk.js';

const $ = (id) => document.getElementById(id);

/** @type {{ issuer: string, clientId: string, redirectUri: string, resource: string, coordinatorUrl: string, pins: { tenant: string, version: number, groupKey: string }[], maxDocumentBytes: number }} */
let config;
/** @type {import('../../client/browser-login.ts').BrowserSession | null} */
let session = null;
/** @type {KmaasClient | null} */
let kmaas = null;
/** The object URL of the document shown, revoked when another one is shown. */
let shownUrl = null;
/**
 * Counts opens: an open whose number is no longer the latest was overtaken by another (or the
 * viewer was closed) and must not touch the viewer. `openAbort` cancels its download.
 */
let openGeneration = 0;
/** @type {AbortController | null} */
let openAbort = null;
/** The document in the viewer (opening, open or refused), or null. */
let viewedDoc = null;

const loginOptions = () => ({
  issuer: config.issuer,
  clientId: config.clientId,
  redirectUri: config.redirectUri,
  resource: config.resource,
});

/** The status line: `tone` 'error' shows it as a failure, not in the success colour. */
function say(text, tone = 'ok') {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', tone === 'error');
}

/** Show a problem as a few plain sentences; `lines` are strings or [label, code] pairs. */
function problem(lines) {
  const box = $('problem');
  if (!lines) {
    box.replaceChildren();
    box.hidden = true;
    return;
  }
  writeLines(box, lines);
  box.hidden = false;
}

/** Replace what `box` holds by `lines`, one paragraph each (a [label, code] pair: code in code). */
function writeLines(box, lines) {
  box.replaceChildren();
  for (const line of lines) {
    const p = document.createElement('p');
    if (Array.isArray(line)) {
      p.append(line[0], ' ');
      const code = document.createElement('code');
      code.textContent = line[1];
      p.append(code);
    } else p.textContent = line;
    box.append(p);
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const [value, unit] = n < 1024 * 1024 ? [n / 1024, 'KB'] : [n / 1024 / 1024, 'MB'];
  return `${Number(value.toFixed(1))} ${unit}`;
}

/** The archive's API could not be reached at all (fetch or the upload failed without answer). */
class ArchiveUnreachable extends Error {
  constructor() {
    super('The archive could not be reached: check your connection, then try again.');
  }
}

/** The error's code; null when there is none to show (the archive could not be reached). */
const errorCode = (err) =>
  err instanceof KmaasError ? err.code : err instanceof ArchiveUnreachable ? null : 'ERR_INTERNAL';
const errorMessage = (err) => (err instanceof Error ? err.message : String(err));

/** What went wrong, in words for the user (the code, when there is one, is shown beside it). */
function explain(err) {
  switch (errorCode(err)) {
    case 'ERR_TOO_FEW_NODES':
      return 'The key service could not reach enough share nodes: try again in a few seconds.';
    case 'ERR_NODE_UNAVAILABLE':
      return 'The key service could not be reached: try again in a few seconds.';
    case 'ERR_TOKEN_EXPIRED':
      return 'Your session has expired: sign in again.';
    default:
      return errorMessage(err);
  }
}

/** Lines for problem(): what failed, why, and the code when there is one. */
function failure(what, err) {
  const code = errorCode(err);
  return [what, code ? [`${explain(err)} Code:`, code] : explain(err)];
}

/**
 * The session's access token, or a clear error once it has expired. Known shortcoming: there is
 * no refresh token, so after 10 minutes the user signs in again, and an upload that takes longer
 * than the token's remaining life fails when its next request is signed.
 */
function accessToken() {
  if (!session || session.expiresAt <= Date.now()) {
    throw new KmaasError('ERR_TOKEN_EXPIRED', 'your session has expired: sign in again');
  }
  return session.accessToken;
}

/** Fires when the session's token expires. */
let expiryTimer = null;

/** Watch the session's end (a timer, and a check whenever the tab is shown again). */
function watchExpiry() {
  clearTimeout(expiryTimer);
  if (!session) return;
  const left = session.expiresAt - Date.now();
  expiryTimer = setTimeout(() => void expired(), Math.min(Math.max(left, 0), 2 ** 31 - 1));
}

/** The session has ended: the signed-out state, saying so, with the Sign in button. */
async function expired() {
  if (!session) return;
  clearTimeout(expiryTimer);
  session = null;
  kmaas = null;
  await logout().catch(() => undefined);
  problem(null);
  render();
  $('who-text').textContent = 'Your session has expired: sign in again.';
  say('Your session has expired: sign in again.', 'error');
  $('sign-in').focus();
}

/** A failure because the token has expired ends the session in the page too. */
function sessionCheck(err) {
  if (errorCode(err) !== 'ERR_TOKEN_EXPIRED') return false;
  void expired();
  return true;
}

/** Headers for a request to the archive's API: the token and a proof of this request. */
async function apiHeaders(method, url) {
  const token = accessToken();
  const proof = await createDpopProof(session.dpopKey, {
    htm: method,
    htu: url,
    accessToken: token,
  });
  return { authorization: `DPoP ${token}`, dpop: proof };
}

/** The archive's JSON error as a KmaasError. */
async function apiError(res) {
  let body;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const e = body && body.error;
  return new KmaasError(
    e && typeof e.code === 'string' ? e.code : 'ERR_INTERNAL',
    e && typeof e.message === 'string' ? e.message : `the archive answered HTTP ${res.status}`,
    e && e.details,
  );
}

async function api(method, path, signal) {
  const url = new URL(path, location.origin).href;
  const headers = await apiHeaders(method, url);
  let res;
  try {
    res = await fetch(url, { method, headers, signal });
  } catch (err) {
    // A TypeError: no answer at all (an AbortError is passed on as it is).
    throw err instanceof TypeError ? new ArchiveUnreachable() : err;
  }
  if (!res.ok) throw await apiError(res);
  return res;
}

function logDerivation(what, nodes) {
  const li = document.createElement('li');
  const time = new Date().toLocaleTimeString();
  li.textContent = `${time}: ${what}: key derived by share nodes ${nodes.join(', ')}`;
  $('derivations').prepend(li);
}

// ---------------------------------------------------------------------------------------------
// Sign-in

async function start() {
  config = await (await fetch('/config.json')).json();
  $('max-size').textContent = formatBytes(config.maxDocumentBytes);
  try {
    session = await completeLogin(loginOptions());
    if (session) history.replaceState(null, '', '/');
    else session = await currentSession(loginOptions());
  } catch (err) {
    history.replaceState(null, '', '/');
    problem(failure('Signing in did not work.', err));
  }
  $('sign-in').addEventListener('click', () => {
    $('sign-in').disabled = true;
    say('Going to the identity provider…');
    beginLogin(loginOptions()).catch((err) => {
      $('sign-in').disabled = false;
      problem(failure('Cannot start signing in.', err));
    });
  });
  $('sign-out').addEventListener('click', () => {
    void signOut();
  });
  $('upload-form').addEventListener('submit', (event) => {
    event.preventDefault();
    void uploadAll();
  });
  $('refresh').addEventListener('click', () => {
    void refresh();
  });
  // Timers are slowed down in a hidden tab: look again when it is shown.
  document.addEventListener('visibilitychange', () => {
    if (session && session.expiresAt <= Date.now()) void expired();
  });
  render();
}

async function signOut() {
  problem(null);
  clearTimeout(expiryTimer);
  await logout();
  session = null;
  kmaas = null;
  const discovery = await fetch(`${config.issuer}/.well-known/openid-configuration`)
    .then((r) => r.json())
    .catch(() => ({}));
  if (typeof discovery.end_session_endpoint === 'string') {
    const end = new URL(discovery.end_session_endpoint);
    end.searchParams.set('client_id', config.clientId);
    $('idp-sign-out-link').href = end.href;
    $('idp-sign-out').hidden = false;
  }
  render();
  say('Signed out.');
  // The Sign out button is hidden now.
  $('status').focus();
}

function render() {
  const signedIn = session !== null;
  $('sign-in').hidden = signedIn;
  $('sign-out').hidden = !signedIn;
  $('app').hidden = !signedIn;
  if (!signedIn) {
    closeViewer();
    $('who-text').textContent = 'You are not signed in.';
    delete $('who-text').dataset.subject;
    delete $('who-text').dataset.tenant;
    $('documents').replaceChildren();
    $('uploads').replaceChildren();
    return;
  }
  $('idp-sign-out').hidden = true;
  $('who-text').textContent = `Signed in as ${session.subject} of tenant ${session.tenant}.`;
  $('who-text').dataset.subject = session.subject;
  $('who-text').dataset.tenant = session.tenant;
  watchExpiry();
  kmaas = new KmaasClient({
    baseUrl: config.coordinatorUrl,
    pins: new MemoryPinStore(config.pins),
    auth: { accessToken, dpopKey: session.dpopKey },
  });
  void refresh();
}

// ---------------------------------------------------------------------------------------------
// The list

async function refresh() {
  try {
    const { documents } = await (await api('GET', '/api/documents')).json();
    showList(documents);
  } catch (err) {
    if (sessionCheck(err)) return;
    problem(failure('Cannot list the documents.', err));
  }
}

function showList(documents) {
  const list = $('documents');
  list.replaceChildren();
  if (documents.length === 0) {
    const li = document.createElement('li');
    li.textContent = 'No documents yet.';
    list.append(li);
    return;
  }
  for (const doc of documents) {
    const li = document.createElement('li');
    li.dataset.id = doc.id;
    const name = document.createElement('div');
    name.className = 'name';
    name.textContent = doc.name;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const when = new Date(doc.createdAt).toLocaleString();
    meta.textContent = `${doc.type}, ${formatBytes(doc.size)}; tenant ${doc.tenant}, uploaded by ${doc.owner}, ${when}`;
    const actions = document.createElement('div');
    actions.className = 'actions';
    const open = document.createElement('button');
    open.type = 'button';
    open.textContent = 'Open';
    // Names may repeat: the label also says whose and when, so each button is told apart.
    const which = `${doc.name}, uploaded by ${doc.owner} of ${doc.tenant} on ${when}`;
    open.setAttribute('aria-label', `Open ${which}`);
    open.addEventListener('click', () => {
      void openDocument(doc);
    });
    actions.append(open);
    if (doc.tenant === session.tenant && doc.owner === session.subject) {
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'secondary';
      del.textContent = 'Delete';
      del.setAttribute('aria-label', `Delete ${which}`);
      del.addEventListener('click', () => {
        void deleteDocument(doc);
      });
      actions.append(del);
    }
    li.append(name, meta, actions);
    list.append(li);
  }
}

async function deleteDocument(doc) {
  if (!confirm(`Delete ${doc.name}?`)) return;
  try {
    await api('DELETE', `/api/documents/${encodeURIComponent(doc.id)}`);
    // The document shown (or being opened) is gone: so is the viewer.
    if (viewedDoc && viewedDoc.id === doc.id) closeViewer();
    say(`Deleted ${doc.name}.`);
    await refresh();
    // Its button is gone: focus goes to the list's heading rather than to the page's body.
    $('docs-title').focus();
  } catch (err) {
    if (sessionCheck(err)) return;
    problem(failure(`Cannot delete ${doc.name}.`, err));
  }
}

// ---------------------------------------------------------------------------------------------
// Upload: encrypt in the page (with a progress bar), then send the envelope (with another).

async function uploadAll() {
  const files = [...$('files').files];
  if (files.length === 0) {
    say('Choose one or more files first.');
    $('files').focus();
    return;
  }
  problem(null);
  $('upload').disabled = true;
  let done = 0;
  try {
    for (const file of files) {
      if (!session) return; // it expired: the page says so
      if (await uploadOne(file)) done++;
    }
  } finally {
    $('upload').disabled = false;
  }
  if (!session) return;
  $('files').value = '';
  say(
    `${done} of ${files.length} document${files.length === 1 ? '' : 's'} uploaded.`,
    done === files.length ? 'ok' : 'error',
  );
  // The file input was emptied: focus goes to what happened instead of to the page's body.
  $('status').focus();
  await refresh();
}

function progressRow(file) {
  const li = document.createElement('li');
  const title = document.createElement('div');
  title.className = 'name';
  title.textContent = `${file.name} (${formatBytes(file.size)})`;
  const bars = {};
  li.append(title);
  for (const [key, label] of [
    ['encrypt', 'Encryption'],
    ['upload', 'Upload'],
  ]) {
    const id = `p-${key}-${crypto.randomUUID()}`;
    const l = document.createElement('label');
    l.htmlFor = id;
    l.textContent = label;
    const bar = document.createElement('progress');
    bar.id = id;
    bar.max = 1;
    bar.value = 0;
    li.append(l, bar);
    bars[key] = bar;
  }
  const note = document.createElement('div');
  note.className = 'meta';
  li.append(note);
  $('uploads').prepend(li);
  /** The row's work is over: its bars (and their labels) go, the note says how it ended. */
  const end = (ok, text) => {
    for (const el of li.querySelectorAll('progress, label')) el.remove();
    li.dataset.state = ok ? 'stored' : 'failed';
    li.classList.toggle('failed', !ok);
    note.textContent = text;
  };
  return { li, bars, note, end };
}

/** Reads `file` through, counting bytes for the encryption progress bar. */
async function* counted(stream, onBytes) {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      onBytes(value.length);
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Known shortcoming: the envelope is built whole in memory (a Blob of its chunks) before it is
 * sent, and the plaintext on open likewise, so a 100 MB document needs about twice that in the
 * tab; streaming uploads (fetch with a ReadableStream body) need HTTP/2 in Chromium.
 */
async function uploadOne(file) {
  const row = progressRow(file);
  if (file.size > config.maxDocumentBytes) {
    row.end(false, `Too large: the archive takes up to ${formatBytes(config.maxDocumentBytes)}.`);
    return false;
  }
  try {
    const documentId = `archive/${crypto.randomUUID()}`;
    let read = 0;
    row.note.textContent = 'Deriving the document key…';
    const sealed = await kmaas.encrypt(
      counted(file.stream(), (n) => {
        read += n;
        row.bars.encrypt.value = file.size === 0 ? 1 : read / file.size;
      }),
      { tenant: session.tenant, documentId },
    );
    logDerivation(`encrypt ${file.name}`, sealed.nodes);
    row.note.textContent = `Encrypting (key from share nodes ${sealed.nodes.join(', ')})…`;
    const parts = [];
    for await (const part of sealed) parts.push(part);
    row.bars.encrypt.value = 1;
    const envelope = new Blob(parts, { type: 'application/octet-stream' });
    row.note.textContent = 'Uploading the envelope…';
    const doc = await send(envelope, file, (fraction) => (row.bars.upload.value = fraction));
    row.end(
      true,
      `Stored (${formatBytes(doc.envelopeSize)} of ciphertext). Key from share nodes ${sealed.nodes.join(', ')}.`,
    );
    row.li.dataset.id = doc.id;
    return true;
  } catch (err) {
    const code = errorCode(err);
    row.end(false, `Failed: ${explain(err)}${code ? ` (${code})` : ''}`);
    sessionCheck(err);
    return false;
  }
}

/** POST the envelope with XMLHttpRequest: fetch has no upload progress. */
async function send(envelope, file, onProgress) {
  const url = new URL('/api/documents', location.origin);
  url.searchParams.set('name', file.name || 'unnamed');
  if (file.type) url.searchParams.set('type', file.type);
  const headers = await apiHeaders('POST', url.href);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url.href);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      let body;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = undefined;
      }
      if (xhr.status === 201 && body && body.document) resolve(body.document);
      else {
        const e = body && body.error;
        reject(
          new KmaasError(
            e && typeof e.code === 'string' ? e.code : 'ERR_INTERNAL',
            e && typeof e.message === 'string' ? e.message : `HTTP ${xhr.status}`,
          ),
        );
      }
    });
    xhr.addEventListener('error', () => reject(new ArchiveUnreachable()));
    xhr.send(envelope);
  });
}

// ---------------------------------------------------------------------------------------------
// Open: download the envelope, derive its key, decrypt in the page, show it.

/** Async iteration over a response body, counting bytes for the progress bar. */
async function* body(res, total, onProgress) {
  const reader = res.body.getReader();
  let got = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      got += value.length;
      onProgress(total > 0 ? got / total : 1);
      yield value;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/** Cancel an open under way (if any), empty the viewer and revoke its object URL. */
function closeViewer() {
  openGeneration++;
  openAbort?.abort();
  openAbort = null;
  viewedDoc = null;
  if (shownUrl) URL.revokeObjectURL(shownUrl);
  shownUrl = null;
  $('viewer-body').replaceChildren();
  $('viewer-info').textContent = '';
  $('viewer-info').classList.remove('problem');
  $('download').hidden = true;
  $('download').removeAttribute('href');
  $('open-progress-box').hidden = true;
  $('viewer').hidden = true;
  delete $('viewer').dataset.state;
  delete $('viewer').dataset.errorCode;
}

async function openDocument(doc) {
  problem(null);
  closeViewer();
  const generation = openGeneration;
  const abort = new AbortController();
  openAbort = abort;
  viewedDoc = doc;
  /** Whether this open is still the one the viewer shows. */
  const current = () => generation === openGeneration;
  const viewer = $('viewer');
  const progress = $('open-progress');
  viewer.hidden = false;
  viewer.dataset.state = 'opening';
  // Counts opens, so that a script driving the page can tell this one's end from the last's.
  viewer.dataset.opens = String(Number(viewer.dataset.opens ?? 0) + 1);
  delete viewer.dataset.openMs;
  $('viewer-title').textContent = doc.name;
  $('viewer-info').textContent = 'Downloading the envelope and deriving its key…';
  $('viewer-info').classList.remove('problem');
  progress.value = 0;
  $('open-progress-box').hidden = false;
  $('viewer-title').focus();
  say(`Opening ${doc.name}…`);
  const started = performance.now();
  try {
    const res = await api('GET', `/api/documents/${encodeURIComponent(doc.id)}`, abort.signal);
    if (!current()) return;
    const total = Number(res.headers.get('content-length') ?? 0);
    // The header says which key to derive; the nodes decide whether this user may have it.
    const opened = await kmaas.decrypt(
      body(res, total, (f) => {
        if (current()) progress.value = f;
      }),
      { tenant: doc.tenant, documentId: doc.documentId },
    );
    logDerivation(`open ${doc.name}`, opened.nodes);
    const parts = [];
    for await (const part of opened) parts.push(part);
    if (!current()) return;
    const blob = new Blob(parts, { type: doc.type });
    const ms = Math.round(performance.now() - started);
    shownUrl = URL.createObjectURL(blob);
    show(doc, blob, shownUrl);
    const link = $('download');
    link.href = shownUrl;
    link.download = doc.name;
    link.hidden = false;
    $('viewer-info').textContent =
      `${formatBytes(blob.size)}, decrypted in this page in ${ms} ms. ` +
      `Key derived by share nodes ${opened.nodes.join(', ')}.`;
    viewer.dataset.openMs = String(ms);
    viewer.dataset.state = 'open';
    say(`Opened ${doc.name}.`);
  } catch (err) {
    if (!current()) return;
    if (sessionCheck(err)) return;
    viewer.dataset.state = 'refused';
    viewer.dataset.errorCode = errorCode(err) ?? '';
    refused(doc, err);
  } finally {
    if (current()) {
      // The download is over, whichever way it ended: no bar left standing.
      $('open-progress-box').hidden = true;
      openAbort = null;
    }
  }
}

/** Why a document did not open, in plain words: who you are, whose it is, the code. */
function refused(doc, err) {
  const code = errorCode(err);
  const lines = [];
  if (code === 'ERR_TOKEN_TENANT' || doc.tenant !== session.tenant) {
    lines.push(
      `You are ${session.subject} of tenant ${session.tenant}. "${doc.name}" belongs to tenant ${doc.tenant}.`,
      `The key service refused to derive its key: your sign-in is for tenant ${session.tenant}, ` +
        `and only users of tenant ${doc.tenant} can open it. The archive holds only ciphertext, so ` +
        'nothing else can open it either.',
    );
  } else {
    lines.push(`"${doc.name}" could not be opened. ${explain(err)}`);
  }
  if (code) lines.push(['Error code:', code]);
  problem(lines);
  // The viewer, where focus is, says it too.
  const info = $('viewer-info');
  writeLines(info, ['This document could not be opened.', ...lines]);
  info.classList.add('problem');
  say(`${doc.name} could not be opened${code ? ` (${code})` : ''}.`, 'error');
}

function show(doc, blob, url) {
  const target = $('viewer-body');
  if (doc.type === 'application/pdf') {
    const frame = document.createElement('iframe');
    frame.src = url;
    frame.title = doc.name;
    target.append(frame);
  } else if (doc.type.startsWith('image/')) {
    const img = document.createElement('img');
    img.src = url;
    img.alt = doc.name;
    target.append(img);
  } else if (doc.type.startsWith('text/') || doc.type === 'application/json') {
    const pre = document.createElement('pre');
    const shown = blob.slice(0, 1024 * 1024);
    void shown.text().then((text) => {
      pre.textContent = blob.size > shown.size ? `${text}\n…(first 1 MB shown)` : text;
    });
    target.append(pre);
  } else {
    const p = document.createElement('p');
    p.textContent = 'This type is not shown in the page; download it instead.';
    target.append(p);
  }
}

start().catch((err) => {
  problem(failure('The page could not start.', err));
});
