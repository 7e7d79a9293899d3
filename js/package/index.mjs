// Node, ES modules: import { verifyIdentity } from '@lynxo/keys'. The same instance as the
// CommonJS entry, so a Keyring made by one works with the other.
import api from './index.cjs';

export const {
  Keyring,
  ReplayCache,
  verifyIdentity,
  inspectKey,
  findKeys,
  LynxoError,
  IdentityError,
  KeyFormatError,
  ConfigError,
  HEADERS,
} = api;
