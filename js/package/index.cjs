// Node, CommonJS: require('@lynxo/keys').
'use strict';
const core = require('./core.cjs');

module.exports = {
  ...core.bind(require('./node/lynxo_keys.js')),
  LynxoError: core.LynxoError,
  IdentityError: core.IdentityError,
  KeyFormatError: core.KeyFormatError,
  ConfigError: core.ConfigError,
  HEADERS: core.HEADERS,
};
