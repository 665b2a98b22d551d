/** Identity's encrypted columns, for re-encryption after a key rotation (`loanbook keys reencrypt`). */
import type { EncryptedTable } from '../platform/reencrypt.js';
import { normaliseEmail } from './model.js';
import { EMAIL_INDEX_PURPOSE } from './service.js';

export const IDENTITY_ENCRYPTED: readonly EncryptedTable[] = [
  {
    table: 'users',
    id: 'id',
    columns: [{ column: 'email_encrypted', context: 'email' }],
    indexes: (plain, cipher) => ({ email_index: cipher.blindIndex(normaliseEmail(plain.email_encrypted!), EMAIL_INDEX_PURPOSE) }),
  },
];
