/**
 * The HTML of the local identity provider: the login form and the error page. Plain, no
 * scripts, no external resources; every value is escaped.
 */

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

/** The login form; `error` (already a user-facing sentence) is shown above it. */
export function renderLoginPage(action: string, clientId: string, error?: string): string {
  const message = error
    ? `<p role="alert" data-error-code="ERR_LOGIN_FAILED">${escapeHtml(error)}</p>\n`
    : '';
  return page(
    'KMaaS development sign-in',
    `<p>Signing in to <strong>${escapeHtml(clientId)}</strong> (local identity provider for development).</p>
${message}<form method="post" action="${escapeHtml(action)}">
<label>Username <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>`,
  );
}

export function renderErrorPage(title: string, message: string): string {
  return page(title, `<p role="alert">${escapeHtml(message)}</p>`);
}
