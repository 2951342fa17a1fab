import Foundation
FileHandle.standardError.write(Data("opportunity-aggregator: not implemented yet\n".utf8))
exit(2)
