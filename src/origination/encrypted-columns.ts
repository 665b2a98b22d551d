/** Origination's encrypted columns, for re-encryption after a key rotation (`loanbook keys reencrypt`). */
import type { EncryptedTable } from '../platform/reencrypt.js';
import { identityKey } from './service.js';

export const ORIGINATION_ENCRYPTED: readonly EncryptedTable[] = [
  {
    table: 'applications',
    id: 'id',
    columns: [{ column: 'applicant_name' }, { column: 'email' }, { column: 'national_id' }, { column: 'date_of_birth' }],
    indexes: (plain, cipher) => ({
      applicant_index: cipher.blindIndex(
        identityKey({ applicantName: plain.applicant_name!, nationalId: plain.national_id ?? undefined, email: plain.email ?? undefined }),
        'applicant',
      ),
    }),
  },
];
