// Node, CommonJS: require('@lynxo/keys').
'use strict';
const core = require('./core.cjs');

module.exports = {
  ...core.bind(require('./wasm/lynxo_keys.cjs')),
  LynxoError: core.LynxoError,
  IdentityError: core.IdentityError,
  KeyFormatError: core.KeyFormatError,
  ConfigError: core.ConfigError,
  HEADERS: core.HEADERS,
};
