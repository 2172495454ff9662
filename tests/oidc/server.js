// An independent, OpenID Certified authorization server (panva/oidc-provider) for the tests.
//
//   node server.js CONFIG.json
//
// CONFIG holds {issuer, port, keys (private JWKs), clients, clientAuthMethods, cookieKeys}. The server listens on
// 127.0.0.1 only and prints "ready <issuer>" once it does. Sign-in and consent are answered
// at once for the user "alice" (no HTML forms); every prompt seen is listed at
// GET /_test/prompts, for assertions.
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const prompts = [];

const USERS = {
  alice: { name: 'Alice Liddell', email: 'alice@example.com', email_verified: true },
};

const provider = new Provider(config.issuer, {
  clients: config.clients,
  clientAuthMethods: config.clientAuthMethods,
  jwks: { keys: config.keys },
  cookies: { keys: config.cookieKeys },
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    userinfo: { enabled: true },
  },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  async findAccount(ctx, id) {
    const claims = USERS[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

// The user: signs in as alice and consents to whatever is asked, at once.
provider.use(async (ctx, next) => {
  if (ctx.path === '/_test/prompts') {
    ctx.body = prompts;
    return;
  }
  const match = /^\/interaction\/([^/]+)$/.exec(ctx.path);
  if (!match || ctx.method !== 'GET') {
    await next();
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  prompts.push({
    name: prompt.name,
    reasons: prompt.reasons,
    scope: params.scope,
    login_hint: params.login_hint ?? null,
  });
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: 'alice' } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    result = { consent: { grantId: await grant.save() } };
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: true,
  });
  ctx.status = 303;
  ctx.redirect(returnTo);
});

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${config.issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
