// The component's entry: componentize-js exports `authenticator` (the WIT interface of
// the same name) and links the `host` functions it imports to the nats-callout host.
import * as host from 'nats-callout:plugin/host@0.3.0';
import { createAuthenticator } from './plugin.js';

export const authenticator = createAuthenticator(host);
