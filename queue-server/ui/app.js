// The queue dashboard: plain modern JavaScript, no build step, no framework.
//
// Safety: every value that comes from the API is inserted as text (the `h`
// helper below makes text nodes; nothing here assigns innerHTML), and the
// server's Content-Security-Policy allows no inline script.
//
// Traffic: one event stream per page (GET /v1/events, read with fetch so it
// can carry the bearer token, resumed with Last-Event-ID), plus the open
// job's own stream on a job page. Events do not trigger requests one by
// one: they mark the view dirty and it re-reads at most once a second.
// Charts re-read history at most once a minute. Errors back off.

'use strict';

(function () {
  const BASE = location.pathname.replace(/\/ui(\/.*)?$/, '');
  const TOKEN_KEY = 'queue-dashboard.token';
  const STATES = ['scheduled', 'ready', 'leased', 'completed', 'dead', 'cancelled'];
  const TERMINAL = new Set(['completed', 'dead', 'cancelled']);
  const REFRESH_MIN_MS = 1000;
  const SLOW_REFRESH_MS = 15000;
  const HISTORY_MIN_MS = 60000;
  const PAGE = 25;
  const COLORS = {
    scheduled: '#7a5af8', ready: '#2563eb', leased: '#dc6803', completed: '#12805c',
    dead: '#d92d20', cancelled: '#667085', enqueued: '#2563eb', failed: '#f79009',
    expired: '#98a2b3', p50: '#2563eb', p95: '#7a5af8',
  };

  // ---- DOM helpers -------------------------------------------------------

  /** An element with attributes (`on…` are listeners) and children (strings become text nodes). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function replace(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  const enc = encodeURIComponent;
  const $ = (sel) => document.querySelector(sel);

  // ---- formatting --------------------------------------------------------

  function trimNum(x) {
    const fixed = Math.abs(x) < 10 ? x.toFixed(1) : x.toFixed(0);
    return fixed.replace(/\.0$/, '');
  }

  /** 950, 1.2k, 35k, 4.1M. */
  function fmtCount(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '—';
    const a = Math.abs(n);
    if (a < 1000) return String(Math.round(n * 10) / 10);
    if (a < 999500) return trimNum(n / 1e3) + 'k';
    if (a < 999500000) return trimNum(n / 1e6) + 'M';
    return trimNum(n / 1e9) + 'G';
  }

  /** 350 ms, 1.2 s, 4.5 min, 3 h, 2 d. */
  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return '—';
    const a = Math.abs(ms);
    if (a < 1000) return Math.round(ms) + ' ms';
    if (a < 60000) return trimNum(ms / 1000) + ' s';
    if (a < 3600000) return trimNum(ms / 60000) + ' min';
    if (a < 172800000) return trimNum(ms / 3600000) + ' h';
    return trimNum(ms / 86400000) + ' d';
  }

  /** 3 min ago, in 12 s, just now. */
  function fmtAgo(at) {
    if (at === null || at === undefined) return '—';
    const d = Date.now() - at;
    if (Math.abs(d) < 2000) return 'just now';
    const a = Math.abs(d);
    let text;
    if (a < 60000) text = Math.round(a / 1000) + ' s';
    else if (a < 3600000) text = Math.round(a / 60000) + ' min';
    else if (a < 172800000) text = Math.round(a / 3600000) + ' h';
    else text = Math.round(a / 86400000) + ' d';
    return d >= 0 ? text + ' ago' : 'in ' + text;
  }

  function fmtTime(at) {
    if (at === null || at === undefined) return '—';
    const date = new Date(at);
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  function fmtClock(at) {
    const date = new Date(at);
    const pad = (n) => String(n).padStart(2, '0');
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function fmtPercent(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return '—';
    if (x === 0) return '0 %';
    if (x < 0.001) return '< 0.1 %';
    return (x * 100 < 10 ? (x * 100).toFixed(1) : (x * 100).toFixed(0)) + ' %';
  }

  /** A time cell: relative text, the exact time in the tooltip. */
  function when(at, cls) {
    if (at === null || at === undefined) return h('span', { class: 'faint' }, '—');
    return h('span', { class: cls || null, title: fmtTime(at), dataset: { at: String(at) } }, fmtAgo(at));
  }

  function json(value) {
    if (value === undefined) return '';
    try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
  }

  function preview(value, max = 80) {
    if (value === null || value === undefined) return '';
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }

  function stateBadge(state) {
    return h('span', { class: `badge st-${STATES.includes(state) || state === 'progress' || state === 'gap' ? state : 'other'}` }, state);
  }

  function num(n, field) {
    return h('td', { class: n ? 'num' : 'num zero', dataset: { field, value: String(n ?? '') }, title: n >= 1000 ? n.toLocaleString() : null }, fmtCount(n ?? 0));
  }

  // ---- toasts, confirmations -------------------------------------------

  function toast(message, kind) {
    const el = h('div', { class: `toast ${kind || ''}`, role: kind === 'error' ? 'alert' : 'status' }, message);
    $('#toasts').append(el);
    setTimeout(() => el.remove(), kind === 'error' ? 9000 : 5000);
  }

  /** Asks before a change; resolves to true when confirmed. */
  // The answer owed to the opening of the confirmation dialog under way.
  // A dialog's close event is delivered as a task after it closes, so the
  // one of an earlier opening can arrive once a later one is open (cancel,
  // then the same button again at once): the event answers whoever is
  // owed an answer when the dialog is closed, and an opening that finds an
  // answer still owed settles it first with the closed dialog's value.
  let confirmOwed = null;
  $('#confirm').addEventListener('close', () => {
    const dialog = $('#confirm');
    if (dialog.open || !confirmOwed) return;
    const owed = confirmOwed;
    confirmOwed = null;
    owed(dialog.returnValue === 'ok');
  });

  function confirmAction({ title, body, confirm, danger }) {
    const dialog = $('#confirm');
    if (confirmOwed) {
      const owed = confirmOwed;
      confirmOwed = null;
      owed(dialog.returnValue === 'ok');
    }
    replace($('#confirm-title'), title);
    replace($('#confirm-body'), body);
    const ok = $('#confirm-ok');
    ok.textContent = confirm || 'Confirm';
    ok.className = danger ? 'button danger primary' : 'button primary';
    dialog.returnValue = '';
    return new Promise((resolve) => {
      confirmOwed = resolve;
      dialog.showModal();
      $('#confirm-cancel').focus();
    });
  }

  // ---- the API -----------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    describe() {
      return this.status ? `${this.message} (${this.code}, HTTP ${this.status})` : this.message;
    }
  }

  let token = sessionStorage.getItem(TOKEN_KEY) || null;
  let tokenPrompt = null;

  /** Asks for the token once for every caller waiting on it. */
  function askToken(refused) {
    if (tokenPrompt) return tokenPrompt;
    tokenPrompt = new Promise((resolve) => {
      const dialog = $('#token-dialog');
      const message = $('#token-message');
      const input = $('#token-input');
      message.textContent = refused
        ? 'The server refused this token. Check it and enter it again.'
        : 'This server requires an access token.';
      message.classList.toggle('wrong', refused);
      input.value = '';
      const submit = (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        token = value;
        sessionStorage.setItem(TOKEN_KEY, value);
        $('#token-form').removeEventListener('submit', submit);
        dialog.close();
        updateTokenButton();
        tokenPrompt = null;
        resolve();
      };
      $('#token-form').addEventListener('submit', submit);
      dialog.showModal();
      input.focus();
    });
    return tokenPrompt;
  }

  function updateTokenButton() {
    $('#forget-token').hidden = !token;
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    if (token) headers.Authorization = 'Bearer ' + token;
    return headers;
  }

  /** One API call. A 401 asks for the token (once for all callers) and retries. */
  async function api(method, path, body) {
    for (;;) {
      const used = token;
      const headers = authHeaders({ Accept: 'application/json' });
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      let response;
      try {
        response = await fetch(BASE + path, {
          method, headers, cache: 'no-store',
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        throw new ApiError(0, 'network', `Cannot reach the server (${e.message}).`);
      }
      if (response.status === 401) {
        // A token set while this call was in flight is tried before asking.
        if (token === used) await askToken(Boolean(used));
        continue;
      }
      const text = await response.text();
      let data = null;
      if (text) {
        try { data = JSON.parse(text); } catch (e) { data = null; }
      }
      if (!response.ok) {
        const error = data && data.error;
        throw new ApiError(response.status, (error && error.code) || `http_${response.status}`,
          (error && error.message) || response.statusText || 'request failed');
      }
      return data;
    }
  }

  // A server without a 1.1 route answers 404 "no such route", or 405 where
  // the path exists with other methods (the listing's POST .../jobs).
  const isMissingRoute = (e) => e instanceof ApiError &&
    ((e.status === 404 && /route/.test(e.message)) || e.status === 405);

  function errorBox(what, error, retry) {
    const message = error instanceof ApiError ? error.describe() : String(error && error.message || error);
    return h('div', { class: 'error-box', role: 'alert' },
      h('div', null, h('strong', null, what), message),
      h('span', { class: 'spacer' }),
      retry ? h('button', { class: 'button small', type: 'button', onclick: retry }, 'Retry') : null);
  }

  function emptyState(title, ...text) {
    return h('div', { class: 'empty' }, h('strong', null, title), ...text);
  }

  /** Runs an action from a button: disables it meanwhile, reports errors as a toast. */
  async function act(button, work, done) {
    if (button) button.disabled = true;
    try {
      const result = await work();
      if (done) done(result);
      return result;
    } catch (e) {
      toast(e instanceof ApiError ? e.describe() : String(e.message || e), 'error');
      return undefined;
    } finally {
      if (button) button.disabled = false;
      current && current.kick && current.kick();
    }
  }

  // ---- the event stream --------------------------------------------------

  /** Parses a text/event-stream body, calling `onEvent({id, type, data})`. */
  async function readSse(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      // Blocks are cut by index and the rest kept once per read: slicing
      // the rest off after every block would copy it once per event.
      let start = 0, end;
      while ((end = buffer.indexOf('\n\n', start)) >= 0) {
        const block = buffer.slice(start, end);
        start = end + 2;
        let id = null, type = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (!line || line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? '' : line.slice(colon + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'id') id = val;
          else if (field === 'event') type = val;
          else if (field === 'data') data.push(val);
        }
        if (!data.length && id === null) continue;
        let parsed = null;
        try { parsed = data.length ? JSON.parse(data.join('\n')) : null; } catch (e) { parsed = null; }
        onEvent({ id, type, data: parsed });
      }
      buffer = buffer.slice(start);
    }
  }

  const sleep = (ms, signal) => new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });

  /**
   * A resumable stream: reconnects with Last-Event-ID after an error, backing
   * off from 1 s to 30 s; asks for the token on a 401.
   */
  class Stream {
    constructor(path, { onEvent, onStatus, onEnd }) {
      this.path = path;
      this.onEvent = onEvent;
      this.onStatus = onStatus || (() => {});
      this.onEnd = onEnd || (() => {});
      this.lastId = null;
      this.stopped = false;
      this.controller = null;
      this.run();
    }

    stop() {
      this.stopped = true;
      if (this.controller) this.controller.abort();
    }

    async run() {
      let backoff = 1000;
      while (!this.stopped) {
        this.controller = new AbortController();
        const signal = this.controller.signal;
        try {
          const used = token;
          const headers = authHeaders({ Accept: 'text/event-stream' });
          if (this.lastId !== null) headers['Last-Event-ID'] = this.lastId;
          const response = await fetch(BASE + this.path, { headers, signal, cache: 'no-store' });
          if (response.status === 401) {
            this.onStatus('offline', 'needs a token');
            if (token === used) await askToken(Boolean(used));
            continue;
          }
          if (response.status === 404) {
            const body = await response.json().catch(() => null);
            this.onEnd(new ApiError(404, 'not_found', (body && body.error && body.error.message) || 'not found'));
            return;
          }
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          this.onStatus('live');
          backoff = 1000;
          let ended = false;
          await readSse(response.body, (event) => {
            if (event.id !== null && event.id !== '') this.lastId = event.id;
            const finished = this.onEvent(event);
            if (finished) ended = true;
          });
          if (ended) {
            this.onEnd(null);
            return;
          }
          if (this.stopped) return;
          throw new Error('the stream closed');
        } catch (e) {
          if (this.stopped) return;
          const wait = Math.round(backoff * (0.8 + Math.random() * 0.4));
          this.onStatus('retrying', `reconnecting in ${fmtDuration(wait)}`);
          await sleep(wait, signal);
          backoff = Math.min(backoff * 2, 30000);
        }
      }
    }
  }

  // The page's one stream of every event; the current view hears it.
  const recent = [];
  const RECENT_MAX = 30;

  function setLive(state, detail) {
    const el = $('#live');
    el.dataset.state = state;
    el.textContent = state === 'live' ? 'live' : state === 'retrying' ? (detail || 'reconnecting') : (detail || 'offline');
  }

  new Stream('/v1/events', {
    onStatus: setLive,
    onEvent(event) {
      if (event.type === 'gap') {
        current && current.onGap && current.onGap();
        current && current.kick && current.kick();
        return false;
      }
      if (!event.data || typeof event.data !== 'object') return false;
      const item = Object.assign({ type: event.type }, event.data);
      recent.unshift(item);
      if (recent.length > RECENT_MAX) recent.length = RECENT_MAX;
      if (current && current.onEvent) current.onEvent(item);
      return false;
    },
  });

  // ---- views -------------------------------------------------------------

  /**
   * Gives a view its refresh cadence: `kick()` (on events) re-reads at most
   * once a second; a slow timer re-reads every 15 s while the tab is
   * visible (for changes that emit no job event, such as a pause).
   */
  function cadence(view, refresh) {
    let running = false, pending = false, timer = null, last = 0, disposed = false;
    async function run() {
      if (disposed) return;
      if (running) { pending = true; return; }
      running = true;
      last = Date.now();
      try { await refresh(); } finally {
        running = false;
        if (pending && !disposed) { pending = false; view.kick(); }
      }
    }
    view.kick = () => {
      if (timer || disposed) return;
      timer = setTimeout(() => { timer = null; run(); }, Math.max(0, REFRESH_MIN_MS - (Date.now() - last)));
    };
    const slow = setInterval(() => { if (!document.hidden) view.kick(); }, SLOW_REFRESH_MS);
    const dispose = view.dispose;
    view.dispose = () => {
      disposed = true;
      clearTimeout(timer);
      clearInterval(slow);
      if (dispose) dispose();
    };
    run();
    return view;
  }

  function pageHead(title, crumbs, ...extra) {
    return h('div', { class: 'page-head' },
      crumbs ? h('div', { class: 'crumbs' }, crumbs) : null,
      h('h1', null, title), ...extra);
  }

  function panel(title, body, ...tools) {
    return h('section', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', null, title), h('span', { class: 'spacer' }), ...tools),
      body);
  }

  function segmented(options, value, onChange) {
    const el = h('div', { class: 'segmented', role: 'group' });
    const draw = (selected) => replace(el, options.map(([key, label]) =>
      h('button', {
        type: 'button', class: key === selected ? 'on' : null, 'aria-pressed': String(key === selected),
        onclick: () => { draw(key); onChange(key); },
      }, label)));
    draw(value);
    return el;
  }

  // ---- charts ------------------------------------------------------------

  const RANGES = { hour: { span: 3600000, step: 60000, label: 'Last hour' }, day: { span: 86400000, step: 900000, label: 'Last day' } };

  /** A time-series chart that keeps its size in step with its container. */
  class Chart {
    constructor(series, format) {
      this.series = series;
      this.format = format;
      this.el = h('div', { class: 'chart' });
      this.plot = null;
      this.observer = new ResizeObserver(() => {
        if (this.plot && this.el.clientWidth) this.plot.setSize({ width: this.el.clientWidth, height: 200 });
      });
      this.observer.observe(this.el);
    }

    message(text) {
      if (this.plot) { this.plot.destroy(); this.plot = null; }
      replace(this.el, h('div', { class: 'chart-empty' }, text));
    }

    set(xs, ys) {
      if (typeof uPlot === 'undefined') { this.message('The chart library did not load.'); return; }
      const data = [xs.map((x) => x / 1000), ...ys];
      if (this.plot) { this.plot.setData(data); return; }
      this.el.replaceChildren();
      const format = this.format;
      this.plot = new uPlot({
        width: this.el.clientWidth || 600,
        height: 200,
        cursor: { points: { size: 6 } },
        legend: { live: true },
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1) * 1.1] } },
        axes: [
          { stroke: '#667085', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#eef0f3' }, values: (u, splits) => splits.map((v) => fmtTime(v * 1000).slice(11, 16)) },
          { stroke: '#667085', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#eef0f3' }, size: 62, values: (u, splits) => splits.map((v) => format(v)) },
        ],
        series: [
          { value: (u, v) => (v === null ? '—' : fmtTime(v * 1000).slice(11, 16)) },
          ...this.series.map((s) => ({
            label: s.label, stroke: s.color, width: 2, spanGaps: false,
            fill: s.fill ? s.color + '18' : undefined, points: { show: false },
            value: (u, v) => (v === null || v === undefined ? '—' : format(v)),
          })),
        ],
      }, data, this.el);
    }

    destroy() {
      this.observer.disconnect();
      if (this.plot) this.plot.destroy();
    }
  }

  /** The history of a queue over a range, or null when the server has none. */
  async function history(queue, rangeKey) {
    const range = RANGES[rangeKey];
    const now = Date.now();
    const to = Math.ceil(now / range.step) * range.step;
    const from = to - range.span;
    return api('GET', `/v1/queues/${enc(queue)}/history?from=${from}&to=${to}&step_ms=${range.step}`);
  }

  /** One x axis for points of several queues: every step of the range. */
  function axis(rangeKey) {
    const range = RANGES[rangeKey];
    const to = Math.ceil(Date.now() / range.step) * range.step;
    const xs = [];
    for (let at = to - range.span; at < to; at += range.step) xs.push(at);
    return xs;
  }

  /** Sums `fields` of several histories onto the axis `xs`, per minute. */
  function sumSeries(histories, xs, fields, stepMs) {
    const index = new Map(xs.map((x, i) => [x, i]));
    const perMinute = 60000 / stepMs;
    const out = fields.map(() => xs.map(() => 0));
    for (const hist of histories) {
      for (const point of hist.points || []) {
        const i = index.get(point.at);
        if (i === undefined) continue;
        fields.forEach((f, k) => { out[k][i] += (point[f] || 0) * perMinute; });
      }
    }
    return out;
  }

  /** Runs `work` over `items`, at most `limit` at a time. */
  async function pool(items, limit, work) {
    const results = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        try { results[i] = { ok: await work(items[i]) }; } catch (e) { results[i] = { error: e }; }
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    return results;
  }

  // ---- overview ----------------------------------------------------------

  function overview(main) {
    const view = {};
    let range = 'hour';
    let histories = new Map();
    let historyAt = 0;
    let historyError = null;
    let queues = [];

    const tiles = h('div', { class: 'tiles' });
    const table = h('div');
    const throughput = new Chart([
      { label: 'Enqueued', color: COLORS.enqueued },
      { label: 'Completed', color: COLORS.completed, fill: true },
    ], (v) => fmtCount(v) + '/min');
    const failures = new Chart([
      { label: 'Failed attempts', color: COLORS.failed },
      { label: 'Dead', color: COLORS.dead },
      { label: 'Expired', color: COLORS.expired },
    ], (v) => fmtCount(v) + '/min');
    const activity = h('ol', { class: 'timeline activity', id: 'activity' });
    const errors = h('div');

    const rangePicker = segmented([['hour', 'Last hour'], ['day', 'Last day']], range, (key) => {
      range = key;
      historyAt = 0;
      view.kick();
    });

    replace(main,
      pageHead('Overview', null, h('span', { class: 'spacer' }), rangePicker),
      errors,
      tiles,
      panel('Queues', table),
      h('div', { class: 'grid-2' },
        panel('Throughput', throughput.el),
        panel('Failures', failures.el)),
      h('div', { style: 'height:16px' }),
      panel('Live activity', h('div', { class: 'panel-body' }, activity)));

    function drawActivity() {
      if (!recent.length) {
        replace(activity, h('li', { class: 'faint', style: 'display:block' }, 'Waiting for events… Jobs appear here as they change state.'));
        return;
      }
      replace(activity, recent.slice(0, 12).map((e, i) => h('li', { class: i === 0 && e.fresh ? 'fresh' : null, dataset: { job: e.id || '' } },
        h('span', { class: 'when', title: fmtTime(e.at) }, fmtClock(e.at || Date.now())),
        h('span', null, stateBadge(e.type)),
        h('a', { href: `#/queues/${enc(e.queue)}`, class: 'mono' }, e.queue),
        h('span', { class: 'what' }, h('a', { href: `#/jobs/${enc(e.id)}`, class: 'mono' }, e.id),
          e.type === 'progress' ? ['  ', preview(e.progress, 60)] : e.last_error ? ['  ', e.last_error] : e.attempts ? `  attempt ${e.attempts}` : null))));
      for (const e of recent) e.fresh = false;
    }

    // The list is redrawn at most every 250 ms, however fast events come:
    // a busy queue sends thousands a second, and redrawing for each one
    // would cost the browser (and a server sharing its machine) more than
    // anyone can read.
    let activityTimer = null;
    view.onEvent = (e) => {
      e.fresh = true;
      if (activityTimer === null) {
        activityTimer = setTimeout(() => { activityTimer = null; drawActivity(); }, 250);
      }
      view.kick();
    };

    function drawTiles() {
      const sum = (f) => queues.reduce((a, q) => a + (q[f] || 0), 0);
      const oldest = queues.reduce((a, q) => (q.oldest_ready_age_ms !== null && q.oldest_ready_age_ms > a ? q.oldest_ready_age_ms : a), 0);
      let done = 0, failed = 0, have = false;
      for (const hist of histories.values()) {
        if (!hist) continue;
        have = true;
        for (const p of hist.points || []) { done += p.completed || 0; failed += p.failed || 0; }
      }
      const tile = (label, value, sub, color, field) => h('div', { class: 'tile' },
        h('div', { class: 'label' }, color ? h('span', { class: 'dot', style: `background:${color}` }) : null, label),
        h('div', { class: 'value', dataset: field ? { total: field } : null }, value),
        h('div', { class: 'sub' }, sub || '\u00a0'));
      replace(tiles,
        tile('Ready', fmtCount(sum('ready')), oldest ? `oldest waiting ${fmtDuration(oldest)}` : 'none waiting', COLORS.ready, 'ready'),
        tile('Leased', fmtCount(sum('leased')), 'running now', COLORS.leased, 'leased'),
        tile('Scheduled', fmtCount(sum('scheduled')), 'delayed or retrying', COLORS.scheduled, 'scheduled'),
        tile('Dead', fmtCount(sum('dead')), h('a', { href: '#/dead' }, 'browse dead letters'), COLORS.dead, 'dead'),
        tile(`Completed (${range === 'hour' ? '1 h' : '24 h'})`, have ? fmtCount(done) : '—', have ? `${fmtCount(done / (RANGES[range].span / 60000))}/min on average` : 'no history', COLORS.completed),
        tile('Failure rate', have ? fmtPercent(done + failed ? failed / (done + failed) : 0) : '—', have ? `${fmtCount(failed)} failed attempts` : 'no history', COLORS.failed));
    }

    function drawTable() {
      if (!queues.length) {
        replace(table, emptyState('No queues yet',
          h('p', null, 'A queue appears once a job is enqueued to it, for example:'),
          h('code', null, `curl -X POST ${location.origin}${BASE}/v1/queues/emails/jobs -H 'Content-Type: application/json' -d '{"payload":{"to":"a@example.com"}}'`)));
        return;
      }
      const rows = queues.map((q) => {
        const hist = histories.get(q.queue);
        let done = null, failed = null;
        if (hist) {
          done = 0; failed = 0;
          for (const p of hist.points || []) { done += p.completed || 0; failed += p.failed || 0; }
        }
        return h('tr', { dataset: { queue: q.queue } },
          h('td', null, h('a', { href: `#/queues/${enc(q.queue)}`, class: 'mono' }, q.queue)),
          h('td', null, q.paused ? h('span', { class: 'badge paused' }, 'paused') : h('span', { class: 'badge active' }, 'active')),
          num(q.scheduled, 'scheduled'), num(q.ready, 'ready'), num(q.leased, 'leased'),
          num(q.completed, 'completed'), num(q.dead, 'dead'), num(q.cancelled, 'cancelled'),
          h('td', { class: 'num', dataset: { field: 'oldest_ready_age_ms', value: String(q.oldest_ready_age_ms ?? '') } },
            q.oldest_ready_age_ms === null ? h('span', { class: 'faint' }, '—') : fmtDuration(q.oldest_ready_age_ms)),
          h('td', { class: 'num' }, done === null ? h('span', { class: 'faint' }, '—') : fmtCount(done)),
          h('td', { class: 'num' }, done === null ? h('span', { class: 'faint' }, '—') : fmtPercent(done + failed ? failed / (done + failed) : 0)));
      });
      const span = range === 'hour' ? '1 h' : '24 h';
      replace(table, h('div', { class: 'table-wrap' }, h('table', { id: 'queues' },
        h('thead', null, h('tr', null,
          h('th', null, 'Queue'), h('th', null, 'State'),
          ['Scheduled', 'Ready', 'Leased', 'Completed', 'Dead', 'Cancelled'].map((t) => h('th', { class: 'num' }, t)),
          h('th', { class: 'num', title: 'How long the oldest ready job has waited' }, 'Oldest ready'),
          h('th', { class: 'num' }, `Done (${span})`), h('th', { class: 'num', title: 'Failed attempts / (completed + failed attempts)' }, `Failure rate (${span})`))),
        h('tbody', null, rows))));
    }

    function drawCharts() {
      if (historyError) {
        const text = isMissingRoute(historyError) ? 'This server keeps no history (it needs queue-server 1.1).' : `History could not be read: ${historyError.describe ? historyError.describe() : historyError}`;
        throughput.message(text);
        failures.message(text);
        return;
      }
      if (!queues.length) {
        throughput.message('No queues yet.');
        failures.message('No queues yet.');
        return;
      }
      const xs = axis(range);
      const hists = [...histories.values()].filter(Boolean);
      const step = RANGES[range].step;
      throughput.set(xs, sumSeries(hists, xs, ['enqueued', 'completed'], step));
      failures.set(xs, sumSeries(hists, xs, ['failed', 'dead', 'expired'], step));
    }

    async function refresh() {
      try {
        queues = (await api('GET', '/v1/queues')).queues || [];
        queues.sort((a, b) => a.queue.localeCompare(b.queue));
        replace(errors);
      } catch (e) {
        replace(errors, errorBox('Could not read the queues.', e, () => view.kick()));
        return;
      }
      // Every queue's history at most once a minute; a queue that appeared
      // since is read at once (only it).
      const due = Date.now() - historyAt >= HISTORY_MIN_MS;
      const wanted = due ? queues : queues.filter((q) => !histories.has(q.queue));
      if (wanted.length) {
        if (due) {
          historyAt = Date.now();
          histories = new Map();
          historyError = null;
        }
        const results = await pool(wanted, 4, (q) => history(q.queue, range));
        results.forEach((r, i) => {
          if (r.error) historyError = r.error;
          histories.set(wanted[i].queue, r.ok || null);
        });
      }
      drawTiles();
      drawTable();
      drawCharts();
    }

    drawActivity();
    view.dispose = () => { throughput.destroy(); failures.destroy(); };
    return cadence(view, refresh);
  }

  // ---- job tables --------------------------------------------------------

  /** The moment that matters for a job in its state. */
  function jobMoment(job) {
    switch (job.state) {
      case 'scheduled': return ['runs', job.run_at];
      case 'ready': return ['ready since', job.run_at];
      case 'leased': return ['started', job.started_at];
      default: return ['finished', job.finished_at ?? job.updated_at];
    }
  }

  function jobsTable(jobs, { showQueue, showState, selection, onToggle, rowActions } = {}) {
    const selectable = Boolean(selection);
    const all = selectable && jobs.length > 0 && jobs.every((j) => selection.has(j.id));
    return h('div', { class: 'table-wrap' }, h('table', { class: 'jobs' },
      h('thead', null, h('tr', null,
        selectable ? h('th', { class: 'check' }, h('input', {
          type: 'checkbox', 'aria-label': 'Select all on this page', checked: all, id: 'select-page',
          onchange: (e) => onToggle(jobs.map((j) => j.id), e.target.checked),
        })) : null,
        h('th', null, 'Job'), showQueue ? h('th', null, 'Queue') : null, showState ? h('th', null, 'State') : null,
        h('th', { class: 'num' }, 'Attempts'), h('th', { class: 'num' }, 'Priority'), h('th', null, 'When'),
        h('th', null, 'Details'), rowActions ? h('th', null, '') : null)),
      h('tbody', null, jobs.map((job) => {
        const [label, at] = jobMoment(job);
        const selected = selectable && selection.has(job.id);
        return h('tr', { class: selected ? 'selected' : null, dataset: { job: job.id } },
          selectable ? h('td', { class: 'check' }, h('input', {
            type: 'checkbox', 'aria-label': `Select ${job.id}`, checked: selected,
            onchange: (e) => onToggle([job.id], e.target.checked),
          })) : null,
          h('td', null, h('a', { href: `#/jobs/${enc(job.id)}`, class: 'mono' }, job.id)),
          showQueue ? h('td', null, h('a', { href: `#/queues/${enc(job.queue)}`, class: 'mono' }, job.queue)) : null,
          showState ? h('td', null, stateBadge(job.state)) : null,
          h('td', { class: 'num' }, `${job.attempts} / ${job.max_attempts}`),
          h('td', { class: 'num' }, String(job.priority)),
          h('td', null, h('span', { class: 'faint' }, label + ' '), when(at)),
          job.last_error
            ? h('td', { class: 'error-text', title: job.last_error }, job.last_error)
            : h('td', { class: 'clip mono', title: preview(job.payload, 2000) }, preview(job.payload)),
          rowActions ? h('td', null, rowActions(job)) : null);
      }))));
  }

  /**
   * Paging over `after` cursors: the listings are oldest first, so "Next"
   * goes on to newer jobs and "Previous" back to the cursor before.
   */
  function pager(state, count, onMove) {
    const page = state.stack.length + 1;
    return h('div', { class: 'pager' },
      h('span', null, count ? `Page ${page} · ${count} job${count === 1 ? '' : 's'} shown` : `Page ${page}`),
      h('span', { class: 'spacer' }),
      h('button', { class: 'button small', type: 'button', disabled: !state.stack.length, onclick: () => { state.after = state.stack.pop(); onMove(); } }, '← Previous'),
      h('button', { class: 'button small', type: 'button', disabled: !state.next, id: 'next-page', onclick: () => { state.stack.push(state.after); state.after = state.next; onMove(); } }, 'Next →'));
  }

  // ---- a queue -----------------------------------------------------------

  function queueView(main, queue, state) {
    const view = {};
    state = STATES.includes(state) ? state : 'ready';
    let stats = null;
    let range = 'hour';
    let historyAt = 0;
    let editing = false;
    const paging = { after: null, next: null, stack: [] };

    const head = h('div');
    const errors = h('div');
    const tabs = h('nav', { class: 'tabs', 'aria-label': 'Job states' });
    const list = h('div');
    const limitsBody = h('div', { class: 'panel-body' });
    const depth = new Chart([
      { label: 'Ready', color: COLORS.ready, fill: true },
      { label: 'Scheduled', color: COLORS.scheduled },
      { label: 'Leased', color: COLORS.leased },
    ], fmtCount);
    const flow = new Chart([
      { label: 'Enqueued', color: COLORS.enqueued },
      { label: 'Completed', color: COLORS.completed, fill: true },
      { label: 'Failed', color: COLORS.failed },
    ], (v) => fmtCount(v) + '/min');
    const wait = new Chart([
      { label: 'Wait p50', color: COLORS.p50 },
      { label: 'Wait p95', color: COLORS.p95 },
    ], fmtDuration);
    const run = new Chart([
      { label: 'Run p50', color: COLORS.p50 },
      { label: 'Run p95', color: COLORS.p95 },
    ], fmtDuration);

    const rangePicker = segmented([['hour', 'Last hour'], ['day', 'Last day']], range, (key) => {
      range = key; historyAt = 0; view.kick();
    });

    replace(main, head, errors,
      h('div', { class: 'cols' },
        h('section', { class: 'panel' }, tabs, list),
        h('div', null,
          panel('Limits', limitsBody),
          panel('Dead letters', h('div', { class: 'panel-body' },
            h('p', { class: 'muted', style: 'margin:0 0 10px' }, 'Browse, requeue or purge the jobs that ran out of attempts.'),
            h('a', { class: 'button', href: `#/dead/${enc(queue)}` }, 'Open dead letters'))))),
      h('div', { class: 'page-head', style: 'margin-top:8px' }, h('h1', { style: 'font-size:16px' }, 'History'), h('span', { class: 'spacer' }), rangePicker),
      h('div', { class: 'grid-2' },
        panel('Wait time (enqueue or run_at to lease)', wait.el),
        panel('Run time (lease to complete)', run.el)),
      h('div', { style: 'height:16px' }),
      h('div', { class: 'grid-2' },
        panel('Depth', depth.el),
        panel('Throughput', flow.el)));

    // The head is built once and updated in place, so that the button
    // under the pointer is not replaced by the next refresh.
    const headBadge = h('span', { class: 'badge', hidden: true });
    const headAge = h('span', { class: 'muted' });
    const toggle = h('button', {
      class: 'button', type: 'button', id: 'pause-toggle', hidden: true,
      onclick: (e) => {
        const paused = stats && stats.paused;
        act(e.currentTarget, () => api('POST', `/v1/queues/${enc(queue)}/${paused ? 'resume' : 'pause'}`),
          (s) => { stats = s; toast(`${queue} ${s.paused ? 'paused: workers lease nothing from it' : 'resumed'}`); drawHead(); });
      },
    });
    replace(head, pageHead(queue, h('span', null, h('a', { href: '#/' }, 'Overview'), ' / queue'),
      headBadge, headAge, h('span', { class: 'spacer' }), toggle));

    function drawHead() {
      if (!stats) return;
      const paused = stats.paused;
      headBadge.hidden = false;
      headBadge.className = paused ? 'badge paused' : 'badge active';
      headBadge.textContent = paused ? 'paused' : 'active';
      headAge.textContent = stats.oldest_ready_age_ms !== null ? `oldest ready job waiting ${fmtDuration(stats.oldest_ready_age_ms)}` : '';
      toggle.hidden = false;
      toggle.className = paused ? 'button primary' : 'button';
      toggle.textContent = paused ? 'Resume' : 'Pause';
    }

    function drawTabs() {
      replace(tabs, STATES.map((s) => h('a', {
        href: `#/queues/${enc(queue)}/${s}`, class: s === state ? 'on' : null, dataset: { state: s },
      }, stateBadge(s), h('span', { class: 'count', dataset: { field: s } }, stats ? fmtCount(stats[s]) : '…'))));
    }

    function drawLimits() {
      if (editing || !stats) return;
      const l = stats.limits || {};
      const rate = l.rate_limit ? `${fmtCount(l.rate_limit.jobs)} jobs per ${fmtDuration(l.rate_limit.per_ms)}` : null;
      const none = (v) => (v === null || v === undefined ? h('span', { class: 'faint' }, 'no limit') : v);
      replace(limitsBody,
        h('dl', { class: 'kv' },
          h('dt', null, 'Max leased'), h('dd', null, none(l.max_leased)),
          h('dt', null, 'Rate limit'), h('dd', null, none(rate)),
          h('dt', null, 'Per group'), h('dd', null, none(l.group_max_leased))),
        h('div', { class: 'toolbar', style: 'margin-top:12px' },
          h('button', { class: 'button', type: 'button', id: 'edit-limits', onclick: () => { editing = true; editLimits(); } }, 'Edit limits')));
    }

    function editLimits() {
      const l = (stats && stats.limits) || {};
      const field = (id, label, value, note) => h('div', null,
        h('label', { for: id }, label),
        h('input', { id, type: 'number', min: '1', step: '1', value: value ?? '', placeholder: 'no limit' }),
        note ? h('div', { class: 'field-note' }, note) : null);
      const problems = h('div');
      const form = h('form', { class: 'panel-body', novalidate: true },
        h('div', { class: 'form-grid' },
          field('limit-max-leased', 'Max leased', l.max_leased, 'Jobs leased at once'),
          field('limit-group', 'Per group', l.group_max_leased, '1 runs each group in order'),
          field('limit-rate-jobs', 'Rate: jobs', l.rate_limit && l.rate_limit.jobs, 'Bucket size and refill'),
          field('limit-rate-per', 'Rate: per ms', l.rate_limit && l.rate_limit.per_ms, 'e.g. 1000 for per second')),
        problems,
        h('div', { class: 'toolbar', style: 'margin-top:12px' },
          h('button', { class: 'button primary', type: 'submit', id: 'save-limits' }, 'Save'),
          h('button', { class: 'button', type: 'button', onclick: () => { editing = false; drawLimits(); } }, 'Cancel')));
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        const read = (id) => {
          const raw = form.querySelector('#' + id).value.trim();
          if (raw === '') return null;
          const n = Number(raw);
          if (!Number.isInteger(n) || n < 1) throw new Error(`${form.querySelector(`label[for=${id}]`).textContent} must be a whole number of at least 1, or empty for no limit.`);
          return n;
        };
        let body;
        try {
          const jobs = read('limit-rate-jobs');
          const per = read('limit-rate-per');
          if ((jobs === null) !== (per === null)) throw new Error('A rate limit needs both its jobs and its period (or neither, for no rate limit).');
          body = {
            max_leased: read('limit-max-leased'),
            group_max_leased: read('limit-group'),
            rate_limit: jobs === null ? null : { jobs, per_ms: per },
          };
        } catch (e) {
          replace(problems, h('div', { class: 'error-box', style: 'margin:12px 0 0' }, e.message));
          return;
        }
        act(form.querySelector('#save-limits'), () => api('PATCH', `/v1/queues/${enc(queue)}`, body), (s) => {
          stats = s; editing = false; toast(`Limits of ${queue} saved`); drawLimits();
        }).then((r) => {
          if (r === undefined && editing) replace(problems, h('div', { class: 'error-box', style: 'margin:12px 0 0' }, 'Not saved: see the message below.'));
        });
      });
      replace(limitsBody, form);
    }

    async function drawList() {
      try {
        const q = `state=${state}&limit=${PAGE}` + (paging.after ? `&after=${enc(paging.after)}` : '');
        const page = await api('GET', `/v1/queues/${enc(queue)}/jobs?${q}`);
        paging.next = page.next;
        const jobs = page.jobs || [];
        if (!jobs.length && !paging.stack.length) {
          replace(list, emptyState(`No ${state} jobs`, h('p', null, state === 'dead'
            ? 'Nothing has run out of attempts.' : `Jobs of ${queue} show up here while they are ${state}.`)));
          return;
        }
        replace(list, jobsTable(jobs, {
          rowActions: state === 'dead' ? null : (job) => (TERMINAL.has(job.state) ? null
            : h('button', { class: 'button small danger', type: 'button', onclick: async (e) => {
              const ok = await confirmAction({ title: 'Cancel this job?', body: `Job ${job.id} will not run (again). A leased job's worker is told at its next heartbeat.`, confirm: 'Cancel job', danger: true });
              if (ok) act(e.target, () => api('DELETE', `/v1/jobs/${enc(job.id)}`), () => toast(`Cancelled ${job.id}`));
            } }, 'Cancel')),
        }), pager(paging, jobs.length, () => view.kick()));
      } catch (e) {
        replace(list, isMissingRoute(e)
          ? emptyState('Job listing is not available', h('p', null, 'This server does not list jobs by state (it needs queue-server 1.1).'))
          : errorBox(`Could not list the ${state} jobs.`, e, () => view.kick()));
      }
    }

    async function drawHistory() {
      if (Date.now() - historyAt < HISTORY_MIN_MS) return;
      historyAt = Date.now();
      const charts = [depth, flow, wait, run];
      let hist;
      try {
        hist = await history(queue, range);
      } catch (e) {
        const text = isMissingRoute(e) ? 'This server keeps no history (it needs queue-server 1.1).' : `History could not be read: ${e.describe ? e.describe() : e}`;
        charts.forEach((c) => c.message(text));
        return;
      }
      const xs = axis(range);
      const byAt = new Map((hist.points || []).map((p) => [p.at, p]));
      const col = (f, scale) => xs.map((x) => {
        const p = byAt.get(x);
        if (!p || p[f] === null || p[f] === undefined) return scale === 'rate' ? 0 : null;
        return scale === 'rate' ? p[f] * 60000 / RANGES[range].step : p[f];
      });
      wait.set(xs, [col('wait_ms_p50'), col('wait_ms_p95')]);
      run.set(xs, [col('run_ms_p50'), col('run_ms_p95')]);
      depth.set(xs, [col('ready'), col('scheduled'), col('leased')]);
      flow.set(xs, [col('enqueued', 'rate'), col('completed', 'rate'), col('failed', 'rate')]);
    }

    async function refresh() {
      try {
        stats = await api('GET', `/v1/queues/${enc(queue)}`);
        replace(errors);
      } catch (e) {
        replace(errors, errorBox(`Could not read ${queue}.`, e, () => view.kick()));
      }
      drawHead();
      drawTabs();
      drawLimits();
      await Promise.all([drawList(), drawHistory()]);
    }

    view.dispose = () => [depth, flow, wait, run].forEach((c) => c.destroy());
    // Only this queue's events make the page re-read.
    view.onEvent = (e) => { if (e.queue === queue) view.kick(); };
    return cadence(view, refresh);
  }

  // ---- a job -------------------------------------------------------------

  function jobView(main, id) {
    const view = {};
    let job = null;
    let stream = null;
    const timeline = h('ol', { class: 'timeline', id: 'timeline' });
    const timelineState = h('span', { class: 'muted', style: 'font-size:12px' });
    const body = h('div');
    const head = h('div');
    const events = [];

    replace(main, head, body);

    // The stream starts with the job's current state and follows it; what
    // came before is told by the job's own timestamps (created, latest
    // attempt started), shown first and marked as such.
    function recorded() {
      if (!job) return [];
      const out = [{ type: 'created', at: job.created_at, note: 'enqueued (from the job record)' }];
      if (job.started_at !== null && job.started_at !== undefined) {
        out.push({ type: 'started', at: job.started_at, note: `latest attempt leased (from the job record)` });
      }
      return out;
    }

    function describe(e) {
      if (e.note) return e.note;
      if (e.type === 'progress') return preview(e.progress, 120);
      const parts = [e.attempts ? `attempt ${e.attempts}` : 'no attempt yet'];
      if (e.type === 'completed' && e.result !== undefined && e.result !== null) parts.push(`result ${preview(e.result, 80)}`);
      if ((e.type === 'dead' || e.type === 'scheduled') && e.last_error) parts.push(e.last_error);
      return parts.join(' · ');
    }

    function drawTimeline() {
      const all = [...recorded(), ...events].sort((a, b) => (a.at || 0) - (b.at || 0));
      if (!all.length) {
        replace(timeline, h('li', { class: 'faint', style: 'display:block' }, 'Waiting for the job\u2019s events…'));
        return;
      }
      replace(timeline, all.map((e) => h('li', { class: e.note ? 'recorded' : null },
        h('span', { class: 'when', title: fmtTime(e.at) }, fmtTime(e.at).slice(11)),
        h('span', null, e.note ? h('span', { class: 'badge plain' }, e.type) : stateBadge(e.type)),
        h('span', { class: 'what', title: e.last_error || (e.progress !== undefined ? json(e.progress) : '') },
          describe(e), e.event_id ? h('span', { class: 'faint' }, ` · event ${e.event_id}`) : ''))));
    }

    function follow() {
      stream = new Stream(`/v1/jobs/${enc(id)}/events`, {
        onStatus: (s, detail) => replace(timelineState, s === 'live' ? 'live' : detail || s),
        onEnd: (error) => {
          replace(timelineState, error ? 'job not found' : 'finished');
        },
        onEvent(event) {
          if (event.type === 'gap') { view.kick(); return false; }
          if (!event.data || typeof event.data !== 'object') return false;
          const e = Object.assign({ type: event.type }, event.data);
          if (!events.some((x) => x.event_id !== undefined && x.event_id === e.event_id && x.type === e.type)) events.push(e);
          drawTimeline();
          view.kick();
          return TERMINAL.has(e.type);
        },
      });
    }

    function kv(rows) {
      return h('dl', { class: 'kv' }, rows.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
    }

    function jsonBlock(value, emptyText, cls) {
      if (value === null || value === undefined) return h('p', { class: 'faint', style: 'margin:0' }, emptyText);
      return h('pre', { class: `json ${cls || ''}` }, typeof value === 'string' && cls === 'error' ? value : json(value));
    }

    function draw() {
      const j = job;
      const terminal = TERMINAL.has(j.state);
      const actions = [];
      if (!terminal) {
        actions.push(h('button', { class: 'button danger', type: 'button', id: 'cancel-job', onclick: async (e) => {
          const ok = await confirmAction({ title: 'Cancel this job?', body: `Job ${j.id} will not run (again). A leased job's worker learns it at its next heartbeat.`, confirm: 'Cancel job', danger: true });
          if (ok) act(e.target, () => api('DELETE', `/v1/jobs/${enc(j.id)}`), (x) => { job = x; toast(`Cancelled ${j.id}`); draw(); });
        } }, 'Cancel job'));
      }
      if (j.state === 'dead') {
        actions.push(h('button', { class: 'button primary', type: 'button', id: 'requeue-job', onclick: async (e) => {
          const ok = await confirmAction({ title: 'Requeue this job?', body: `Job ${j.id} becomes ready again with its attempts reset to 0.`, confirm: 'Requeue' });
          if (ok) act(e.target, () => api('POST', `/v1/queues/${enc(j.queue)}/dead/requeue`, { ids: [j.id] }), (r) => toast(r.requeued ? `Requeued ${j.id}` : `${j.id} was no longer dead`));
        } }, 'Requeue'));
      }
      replace(head, pageHead(h('span', { class: 'mono', style: 'font-size:18px' }, j.id),
        h('span', null, h('a', { href: '#/' }, 'Overview'), ' / ', h('a', { href: `#/queues/${enc(j.queue)}` }, j.queue), ' / job'),
        stateBadge(j.state), h('span', { class: 'spacer' }), actions));

      const cb = j.callback;
      const callbackPanel = j.callback_url ? panel('Callback', h('div', { class: 'panel-body' }, kv([
        ['URL', h('span', { class: 'mono' }, j.callback_url)],
        ['Delivery', cb ? h('span', { class: `badge ${cb.state === 'delivered' ? 'st-completed' : cb.state === 'failed' ? 'st-dead' : 'st-leased'}` }, cb.state) : h('span', { class: 'faint' }, 'owed once the job finishes')],
        cb && ['Attempts', String(cb.attempts)],
        cb && ['Last status', cb.last_status === null ? '—' : String(cb.last_status)],
        cb && cb.last_error && ['Last error', h('span', { style: 'color:var(--danger)' }, cb.last_error)],
        cb && cb.next_attempt_at && ['Next attempt', when(cb.next_attempt_at)],
        cb && cb.delivered_at && ['Delivered', when(cb.delivered_at)],
      ]), terminal ? h('div', { class: 'toolbar', style: 'margin-top:12px' }, h('button', {
        class: 'button', type: 'button', id: 'retry-callback',
        onclick: (e) => act(e.target, () => api('POST', `/v1/jobs/${enc(j.id)}/callback/retry`), (x) => { job = x; toast('A new delivery starts now'); draw(); }),
      }, 'Retry delivery')) : null)) : null;

      const headers = Object.entries(j.headers || {});
      replace(body, h('div', { class: 'cols' },
        h('div', null,
          panel('Payload', h('div', { class: 'panel-body' }, jsonBlock(j.payload, 'null'))),
          j.state === 'completed' || j.result !== null ? panel('Result', h('div', { class: 'panel-body' }, jsonBlock(j.result, 'No result.'))) : null,
          j.last_error ? panel('Last error', h('div', { class: 'panel-body' }, jsonBlock(j.last_error, '', 'error'))) : null,
          j.progress !== null ? panel('Progress', h('div', { class: 'panel-body' }, jsonBlock(j.progress, ''))) : null,
          panel('Event timeline', h('div', { class: 'panel-body' }, timeline), timelineState)),
        h('div', null,
          panel('Details', h('div', { class: 'panel-body' }, kv([
            ['State', stateBadge(j.state)],
            ['Queue', h('a', { href: `#/queues/${enc(j.queue)}`, class: 'mono' }, j.queue)],
            ['Attempts', `${j.attempts} of ${j.max_attempts}`],
            ['Priority', String(j.priority)],
            ['Correlation id', j.correlation_id ? h('a', { href: `#/correlation/${enc(j.correlation_id)}`, class: 'mono', title: 'Every job of this correlation id' }, j.correlation_id) : h('span', { class: 'faint' }, 'none')],
            j.group !== null && ['Group', h('span', { class: 'mono' }, j.group)],
            j.schedule !== null && ['Schedule', h('a', { href: '#/schedules', class: 'mono' }, j.schedule)],
            j.idempotency_key !== null && ['Idempotency key', h('span', { class: 'mono' }, j.idempotency_key)],
            ['Created', when(j.created_at)],
            ['Run at', when(j.run_at)],
            j.started_at !== null && ['Started', when(j.started_at)],
            j.lease_expires_at !== null && ['Lease expires', when(j.lease_expires_at)],
            j.finished_at !== null && ['Finished', when(j.finished_at)],
            ['Updated', when(j.updated_at)],
            ['Back-off base', fmtDuration(j.backoff_ms)],
            j.timeout_ms !== null && ['Timeout', fmtDuration(j.timeout_ms)],
            j.expires_at !== null && ['Expires', when(j.expires_at)],
          ]))),
          panel('Headers', headers.length ? h('div', { class: 'panel-body' }, kv(headers.map(([k, v]) => [k, h('span', { class: 'mono' }, v)])))
            : h('div', { class: 'panel-body faint' }, 'No headers.')),
          callbackPanel)));
      drawTimeline();
    }

    async function refresh() {
      try {
        job = await api('GET', `/v1/jobs/${enc(id)}`);
      } catch (e) {
        if (e.status === 404 || e.status === 400) {
          replace(head, pageHead('Job not found', h('a', { href: '#/' }, 'Overview')));
          replace(body, emptyState(`No job ${id}`, h('p', null, 'It may never have existed, or it finished and was removed after its retention.'),
            h('p', null, h('a', { href: `#/correlation/${enc(id)}` }, 'Look for jobs with this correlation id instead'))));
          if (stream) { stream.stop(); stream = null; }
          return;
        }
        replace(head, pageHead(h('span', { class: 'mono' }, id)));
        replace(body, errorBox('Could not read the job.', e, () => view.kick()));
        return;
      }
      draw();
      if (!stream) follow();
    }

    view.dispose = () => { if (stream) stream.stop(); };
    view.onEvent = (e) => { if (e.id === id) view.kick(); };
    return cadence(view, refresh);
  }

  // ---- a correlation id ------------------------------------------------

  function correlationView(main, correlationId) {
    const view = {};
    const paging = { after: null, next: null, stack: [] };
    const list = h('div');
    replace(main,
      pageHead('Jobs of a correlation id', h('span', null, h('a', { href: '#/' }, 'Overview'), ' / correlation'),
        h('span', { class: 'mono badge plain' }, correlationId)),
      h('section', { class: 'panel' }, list));

    async function refresh() {
      try {
        const q = `correlation_id=${enc(correlationId)}&limit=${PAGE}` + (paging.after ? `&after=${enc(paging.after)}` : '');
        const page = await api('GET', `/v1/jobs?${q}`);
        paging.next = page.next;
        const jobs = page.jobs || [];
        if (!jobs.length && !paging.stack.length) {
          replace(list, emptyState('No jobs with this correlation id', h('p', null, 'Jobs carry the correlation id of the request that enqueued them (the body\u2019s correlation_id, else its X-Request-Id).')));
          return;
        }
        replace(list, jobsTable(jobs, { showQueue: true, showState: true }), pager(paging, jobs.length, () => view.kick()));
      } catch (e) {
        replace(list, isMissingRoute(e)
          ? emptyState('Listing by correlation id is not available', h('p', null, 'This server does not list jobs by correlation id (it needs queue-server 1.1).'))
          : errorBox('Could not list the jobs.', e, () => view.kick()));
      }
    }
    view.onEvent = (e) => { if (e.correlation_id === correlationId) view.kick(); };
    return cadence(view, refresh);
  }

  // ---- dead letters ------------------------------------------------------

  function deadView(main, queue) {
    const view = {};
    const selection = new Set();
    const paging = { after: null, next: null, stack: [] };
    let queues = [];
    let jobs = [];
    const side = h('div');
    const content = h('div');
    const head = h('div');
    const errors = h('div');

    replace(main, head, errors, h('div', { class: 'cols', style: 'grid-template-columns:minmax(0,1fr) 260px' }, content, side));

    function drawSide() {
      const withDead = queues.filter((q) => q.dead > 0);
      replace(side, panel('Queues with dead letters', withDead.length
        ? h('table', null, h('tbody', null, withDead.map((q) => h('tr', { class: q.queue === queue ? 'selected' : null },
          h('td', null, h('a', { href: `#/dead/${enc(q.queue)}`, class: 'mono' }, q.queue)),
          num(q.dead, 'dead')))))
        : h('div', { class: 'panel-body faint' }, 'No queue has dead letters.')));
    }

    function toggle(ids, on) {
      for (const id of ids) { if (on) selection.add(id); else selection.delete(id); }
      drawContent();
    }

    async function requeue(button, ids, label) {
      const ok = await confirmAction({
        title: ids ? `Requeue ${label}?` : `Requeue every dead job of ${queue}?`,
        body: ids ? `${label} of ${queue} become${ids.length === 1 ? 's' : ''} ready again with attempts reset to 0.`
          : `All ${fmtCount(stats().dead)} dead jobs of ${queue} become ready again with attempts reset to 0.`,
        confirm: 'Requeue',
      });
      if (!ok) return;
      await act(button, () => api('POST', `/v1/queues/${enc(queue)}/dead/requeue`, ids ? { ids } : {}), (r) => {
        toast(`Requeued ${fmtCount(r.requeued)} job${r.requeued === 1 ? '' : 's'} of ${queue}`);
        if (ids) ids.forEach((id) => selection.delete(id)); else selection.clear();
        paging.after = null; paging.stack = [];
      });
    }

    async function purge(button) {
      const ok = await confirmAction({
        title: `Purge the dead letters of ${queue}?`,
        body: `All ${fmtCount(stats().dead)} dead jobs of ${queue} are deleted for good. This cannot be undone.`,
        confirm: 'Delete them', danger: true,
      });
      if (!ok) return;
      await act(button, () => api('DELETE', `/v1/queues/${enc(queue)}/dead`), (r) => {
        toast(`Deleted ${fmtCount(r.deleted)} dead job${r.deleted === 1 ? '' : 's'} of ${queue}`);
        selection.clear(); paging.after = null; paging.stack = [];
      });
    }

    const stats = () => queues.find((q) => q.queue === queue) || { dead: 0 };

    function drawContent() {
      if (!queue) {
        replace(content, h('section', { class: 'panel' }, emptyState('No dead letters', h('p', null, 'Jobs that run out of attempts (or fail with retryable: false) land here.'))));
        return;
      }
      const total = stats().dead;
      const selected = [...selection];
      const toolbar = h('div', { class: 'toolbar' },
        h('button', { class: 'button', type: 'button', id: 'requeue-selected', disabled: !selected.length,
          onclick: (e) => requeue(e.currentTarget, selected, `${selected.length} selected job${selected.length === 1 ? '' : 's'}`) },
        `Requeue selected (${selected.length})`),
        h('button', { class: 'button', type: 'button', id: 'requeue-all', disabled: !total, onclick: (e) => requeue(e.currentTarget, null) }, `Requeue all (${fmtCount(total)})`),
        h('button', { class: 'button danger', type: 'button', id: 'purge', disabled: !total, onclick: (e) => purge(e.currentTarget) }, 'Purge…'));
      replace(content, h('section', { class: 'panel' },
        h('div', { class: 'panel-head' }, h('h2', null, `Dead letters of ${queue}`), h('span', { class: 'spacer' }), toolbar),
        jobs.length ? [
          jobsTable(jobs, {
            selection, onToggle: toggle,
            rowActions: (job) => h('button', { class: 'button small', type: 'button', dataset: { requeue: job.id },
              onclick: (e) => requeue(e.currentTarget, [job.id], `job ${job.id}`) }, 'Requeue'),
          }),
          pager(paging, jobs.length, () => view.kick()),
        ] : emptyState(`No dead letters in ${queue}`, h('p', null, 'Jobs that run out of attempts land here.'))));
    }

    async function refresh() {
      try {
        queues = ((await api('GET', '/v1/queues')).queues || []).sort((a, b) => a.queue.localeCompare(b.queue));
        replace(errors);
      } catch (e) {
        replace(errors, errorBox('Could not read the queues.', e, () => view.kick()));
        return;
      }
      if (!queue) {
        const first = queues.find((q) => q.dead > 0);
        if (first) { location.replace(`#/dead/${enc(first.queue)}`); return; }
      }
      replace(head, pageHead('Dead letters', h('span', null, h('a', { href: '#/' }, 'Overview'), ' / dead letters'),
        queue ? h('a', { href: `#/queues/${enc(queue)}`, class: 'mono badge plain' }, queue) : null));
      drawSide();
      if (queue) {
        try {
          const q = `limit=${PAGE}` + (paging.after ? `&after=${enc(paging.after)}` : '');
          const page = await api('GET', `/v1/queues/${enc(queue)}/dead?${q}`);
          jobs = page.jobs || [];
          paging.next = page.next;
          // Forget selected jobs that left the dead letters.
          const here = new Set(jobs.map((j) => j.id));
          for (const id of [...selection]) if (!here.has(id)) selection.delete(id);
        } catch (e) {
          replace(content, errorBox(`Could not list the dead letters of ${queue}.`, e, () => view.kick()));
          return;
        }
      }
      drawContent();
    }

    view.onEvent = (e) => { if (!queue || e.queue === queue) view.kick(); };
    return cadence(view, refresh);
  }

  // ---- schedules ---------------------------------------------------------

  function schedulesView(main) {
    const view = {};
    const list = h('div');
    replace(main, pageHead('Schedules', h('span', null, h('a', { href: '#/' }, 'Overview'), ' / schedules')), h('section', { class: 'panel' }, list));

    function every(ms) {
      return `every ${fmtDuration(ms)}`;
    }

    async function refresh() {
      let schedules;
      try {
        schedules = (await api('GET', '/v1/schedules')).schedules || [];
      } catch (e) {
        replace(list, isMissingRoute(e) ? emptyState('Schedules are not available', h('p', null, 'This server has no schedules (it needs queue-server 1.1).'))
          : errorBox('Could not read the schedules.', e, () => view.kick()));
        return;
      }
      if (!schedules.length) {
        replace(list, emptyState('No schedules', h('p', null, 'A schedule enqueues a job on a cron expression or a fixed period, for example:'),
          h('code', null, `curl -X PUT ${location.origin}${BASE}/v1/schedules/nightly -H 'Content-Type: application/json' -d '{"queue":"reports","cron":"0 3 * * *","job":{"payload":{}}}'`)));
        return;
      }
      schedules.sort((a, b) => a.name.localeCompare(b.name));
      replace(list, h('div', { class: 'table-wrap' }, h('table', { id: 'schedules' },
        h('thead', null, h('tr', null, ['Name', 'Queue', 'When', 'Time zone', 'State', 'Next run', 'Last run', 'Last job', ''].map((t) => h('th', null, t)))),
        h('tbody', null, schedules.map((s) => h('tr', { dataset: { schedule: s.name } },
          h('td', { class: 'mono' }, s.name),
          h('td', null, h('a', { href: `#/queues/${enc(s.queue)}`, class: 'mono' }, s.queue)),
          h('td', { class: 'mono' }, s.cron !== null ? s.cron : every(s.every_ms)),
          h('td', null, s.timezone),
          h('td', null, s.paused ? h('span', { class: 'badge paused' }, 'paused') : h('span', { class: 'badge active' }, 'active')),
          h('td', null, s.paused ? h('span', { class: 'faint' }, 'paused') : when(s.next_run_at)),
          h('td', null, when(s.last_run_at)),
          h('td', null, s.last_job_id ? h('a', { href: `#/jobs/${enc(s.last_job_id)}`, class: 'mono' }, s.last_job_id) : h('span', { class: 'faint' }, '—')),
          h('td', null, h('div', { class: 'toolbar' },
            h('button', { class: 'button small', type: 'button',
              onclick: (e) => act(e.target, () => api('POST', `/v1/schedules/${enc(s.name)}/${s.paused ? 'resume' : 'pause'}`), (x) => toast(`${x.name} ${x.paused ? 'paused' : 'resumed'}`)) },
            s.paused ? 'Resume' : 'Pause'),
            h('button', { class: 'button small', type: 'button',
              onclick: async (e) => {
                const ok = await confirmAction({ title: `Run ${s.name} now?`, body: `One job of ${s.name} is enqueued to ${s.queue} now; the next tick does not move.`, confirm: 'Run now' });
                if (!ok) return;
                act(e.target, () => api('POST', `/v1/schedules/${enc(s.name)}/trigger`), (job) => {
                  const el = h('span', null, `${s.name} enqueued `, h('a', { href: `#/jobs/${enc(job.id)}` }, job.id));
                  toast(el);
                });
              } }, 'Run now')))))))));
    }
    // A tick or a trigger enqueues a job: re-read for the new last run.
    view.onEvent = () => view.kick();
    return cadence(view, refresh);
  }

  // ---- routing -----------------------------------------------------------

  let current = null;

  function route() {
    if (current && current.dispose) current.dispose();
    current = null;
    const main = $('#main');
    main.replaceChildren();
    const parts = location.hash.replace(/^#\/?/, '').split('/').map((p) => {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    const [section, a, b] = parts;
    let nav = 'overview';
    if (section === 'queues' && a) current = queueView(main, a, b);
    else if (section === 'jobs' && a) current = jobView(main, a);
    else if (section === 'correlation' && a) current = correlationView(main, a);
    else if (section === 'dead') { nav = 'dead'; current = deadView(main, a || null); }
    else if (section === 'schedules') { nav = 'schedules'; current = schedulesView(main); }
    else current = overview(main);
    for (const link of document.querySelectorAll('[data-nav]')) link.classList.toggle('active', link.dataset.nav === nav);
    document.title = `${parts.filter(Boolean).slice(0, 2).join(' · ') || 'Overview'} · Queue dashboard`;
  }

  // The search box: a job id opens the job; anything else (or an unknown id)
  // lists the jobs of that correlation id.
  $('#search').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('#search-input');
    const value = input.value.trim();
    if (!value) return;
    try {
      const job = await api('GET', `/v1/jobs/${enc(value)}`);
      location.hash = `#/jobs/${enc(job.id)}`;
    } catch (e) {
      if (e.status === 404 || e.status === 400) location.hash = `#/correlation/${enc(value)}`;
      else toast(e.describe ? e.describe() : String(e), 'error');
    }
  });

  $('#forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    updateTokenButton();
    toast('Token forgotten for this tab');
  });
  $('#token-dialog').addEventListener('cancel', (e) => e.preventDefault());

  // Relative times go stale; redraw them every 10 s without a request.
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-at]')) el.textContent = fmtAgo(Number(el.dataset.at));
  }, 10000);

  updateTokenButton();
  window.addEventListener('hashchange', route);
  route();
}());
