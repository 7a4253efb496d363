// A real OpenID provider for cutover's single sign-on tests: the certified `oidc-provider`, with
// one static public client (`cutover`, a native app: any loopback port, PKCE required) and one
// user, `alice`, in group `deployers`. Its login page is the only part written here: it signs
// alice in and grants the scopes asked for without a form, so a test's HTTP client (the
// "browser") completes the authorization code flow by following redirects.
//
//   node provider.js PORT      # prints `ready ISSUER` once it listens on 127.0.0.1:PORT

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const issuer = `http://127.0.0.1:${port}`;

const accounts = {
  alice: {
    name: 'Alice Example',
    preferred_username: 'alice',
    email: 'alice@example.test',
    email_verified: true,
    groups: ['deployers'],
  },
  bob: { name: 'Bob Example', preferred_username: 'bob', email: 'bob@example.test', groups: ['contractors'] },
};
// `node provider.js PORT form`: the login page is a form asking who signs in (for a real browser).
const loginForm = process.argv[3] === 'form';

// A signing key of this run's own, published in the provider's JWKS.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'cutover',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      // The console behind a reverse proxy is reached as `localhost` (`it/console_sso.rs`).
      redirect_uris: ['http://127.0.0.1/callback', 'http://127.0.0.1/login/callback', 'http://localhost/login/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [signing] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // The ID token carries the claims of the scopes granted (what cutover reads the groups from).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
});

const interactions = /^\/interaction\/[^/]+$/;
const callback = provider.callback();

createServer(async (req, res) => {
  if (!interactions.test(req.url.split('?')[0])) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login' && loginForm && req.method === 'GET') {
      res.setHeader('Content-Type', 'text/html');
      res.end(`<form method="post"><input id="login" name="login"><button id="signin">Sign in</button></form>`);
      return;
    }
    if (details.prompt.name === 'login') {
      let accountId = 'alice';
      if (loginForm) {
        let body = '';
        for await (const chunk of req) body += chunk;
        accountId = new URLSearchParams(body).get('login');
      }
      await provider.interactionFinished(req, res, { login: { accountId } });
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } });
  } catch (err) {
    res.statusCode = 500;
    res.end(String(err));
  }
}).listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
